"""The job runner (worker processes and the in-process executor share it): the disk fills (ENOSPC injected)."""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

import pytest

from wan_studio.cluster.runner import JobRunner
from wan_studio.engine import video_io
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.memory.manager import ModelManager, default_loader


def test_disk_full_while_writing_fails_the_job_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    runner = JobRunner("w", ModelManager(default_loader(tmp_path / "m")), tmp_path / "out", sent.append)
    request = validate(GenerationRequest(prompt="a fox", width=64, height=64, num_frames=5, steps=1, seed=1))
    runner.run("ok", request.to_dict(), threading.Event())
    earlier = [Path(p) for p in sent[-1]["outputs"]]

    def no_space(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_io.imageio_ffmpeg, "write_frames", no_space)
    runner.run("full", {**request.to_dict(), "seed": 2}, threading.Event())
    last = sent[-1]
    assert (last["ev"], last["job_id"]) == ("failed", "full")
    assert last["error"].startswith("the disk is full while writing") and "free space" in last["error"]
    assert all(p.exists() for p in earlier)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == sorted(p.name for p in earlier)
