"""Shared fixtures: temp folders, a Studio on the tiny demo model, images made in code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from wan_studio.bootstrap import bootstrap  # noqa: E402 - after the environment it reads

bootstrap()  # the test process is an entry point like app.py


@pytest.fixture
def settings(tmp_path: Path):
    from wan_studio.settings import Settings

    return Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs")


@pytest.fixture
def studio(settings):
    """A Studio on temp folders running jobs on a thread of this process (fast; the worker
    processes have their own tests in tests/cluster and tests/ui/test_jobs_api.py)."""
    from wan_studio.memory.manager import ModelManager, default_loader
    from wan_studio.services import Studio

    s = Studio.create(settings, manager=ModelManager(default_loader(settings.models_dir)))
    yield s
    s.close()


@pytest.fixture(scope="session")
def demo_pipe():
    """One tiny TI2V pipeline for the whole session (building it takes a few seconds)."""
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    """A 300×200 gradient PNG."""
    x = np.linspace(0, 255, 300, dtype=np.uint8)
    arr = np.stack([np.tile(x, (200, 1)), np.full((200, 300), 80, np.uint8), np.tile(x[::-1], (200, 1))], -1)
    path = tmp_path / "start.png"
    Image.fromarray(arr).save(path)
    return path
