"""Half-written outputs of a killed worker are removed once idle; finished files and inputs stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from wan_studio.jobs.cleanup import remove_stale_temp_files


def test_only_idle_temporary_files_are_removed(tmp_path: Path):
    day = tmp_path / "2026-11-26"
    day.mkdir()
    old_tmp = day / ".085626-demo-1-ab12.x7k2.mp4"
    fresh_tmp = day / ".090000-demo-2-cd34.q9z1.mp4"
    video, sidecar = day / "085626-demo-1-ab12.mp4", day / "085626-demo-1-ab12.json"
    kept_input = tmp_path / ".inputs" / "job1.png"
    kept_input.parent.mkdir()
    for p in (old_tmp, fresh_tmp, video, sidecar, kept_input, tmp_path / "jobs.db"):
        p.write_bytes(b"x")
    past = time.time() - 60
    for p in (old_tmp, video, sidecar, kept_input):
        os.utime(p, (past, past))
    assert remove_stale_temp_files(tmp_path, idle_s=10) == [old_tmp]
    assert not old_tmp.exists() and fresh_tmp.exists() and video.exists() and sidecar.exists()
    assert kept_input.exists()


def test_a_work_folder_removed_during_the_sweep_is_passed_over(tmp_path: Path, monkeypatch) -> None:
    """A job's work folder dropped while the sweep walks the outputs (its job just ended) once killed
    the sweeping thread with FileNotFoundError; the sweep goes on and still removes what is stale."""
    gone = tmp_path / ".work" / "e437e34a7c9f"
    gone.mkdir(parents=True)
    stale = tmp_path / ".085626-demo-1-ab12.x7k2.mp4"
    stale.write_bytes(b"x")
    past = time.time() - 60
    os.utime(stale, (past, past))
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("e437e34a7c9f"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert remove_stale_temp_files(tmp_path, idle_s=10) == [stale]
