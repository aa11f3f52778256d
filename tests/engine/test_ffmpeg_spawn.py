"""ffmpeg is started without a Python ``preexec_fn``, so the worker is not fork()ed for it.

A fork copies every pinned page of the worker at once: on a GPU machine a worker holding an A14B's
experts pinned was killed for RAM at its first mp4, and an S2V worker spent 20+ s per mp4 (see
``engine.video_io``). Python starts a child by vfork() only when no ``preexec_fn`` is given.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wan_studio.engine import video_io


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ffmpeg imageio-ffmpeg starts."""
    from imageio_ffmpeg import _io

    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_io.subprocess, "Popen", popen)
    return seen


def test_writing_and_reading_an_mp4_start_ffmpeg_without_a_fork_hook(spawns: list[dict[str, Any]],
                                                                       tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    video = video_io.write_mp4(tmp_path / "clip.mp4", frames, 8)
    back, fps = video_io.read_mp4(video)
    assert back.shape == (4, 32, 32, 3) and fps == 8
    assert len(spawns) >= 2  # the writer and the reader
    assert all(kw.get("preexec_fn") is None for kw in spawns), spawns


def test_a_fresh_worker_process_gets_the_setting_from_the_import() -> None:
    code = ("import wan_studio.engine.video_io, imageio_ffmpeg._utils as u; "
            "print(u._popen_kwargs(prevent_sigint=True)['preexec_fn'])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "None", out.stderr
