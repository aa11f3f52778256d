"""A real worker process killed with -9 mid-job: the retry resumes at the job's last step
checkpoint (the sidecar says which) and makes the video an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from tests.cluster.test_local import gone_within, queue  # noqa: F401  (a real worker process on the demo model)
from wan_studio.engine.job import work_dir_of
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.video_io import read_mp4
from wan_studio.jobs.queue import JobQueue

# Enough short steps to be caught mid-way by a kill.
SLOW = dict(prompt="a red fox in snow", width=128, height=128, num_frames=9, steps=60, seed=21)


def _kept_step(folder: Path, at_least: int, timeout_s: float = 600) -> int:
    """The step of the checkpoint in ``folder`` once one after ``at_least`` steps is on disk."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            step = int(torch.load(folder / "steps.pt", map_location="cpu", weights_only=False)["step"])
            if step >= at_least:
                return step
        except (OSError, EOFError, RuntimeError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint after step {at_least} in {folder}")


def _sidecar(outputs: list[str]) -> dict:
    return json.loads(Path(next(o for o in outputs if o.endswith(".json"))).read_text())


def test_kill_9_mid_job_resumes_from_the_checkpoint_with_the_same_video(queue: JobQueue) -> None:
    job = queue.submit(GenerationRequest(**SLOW))
    kept = _kept_step(work_dir_of(queue.outputs_dir, job.id), at_least=20)
    os.kill(queue.executor.workers()[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
    job = queue.wait(job.id, timeout_s=600)
    assert job.status == "done" and job.attempts == 2, job.error
    resumed = _sidecar(job.outputs)["checkpoints"]["resumed_from_step"]
    assert kept <= resumed < SLOW["steps"]
    assert gone_within(work_dir_of(queue.outputs_dir, job.id))  # checkpoints removed with the job

    again = queue.wait(queue.submit(GenerationRequest(**SLOW)).id, timeout_s=600)
    assert again.status == "done" and _sidecar(again.outputs)["checkpoints"]["resumed_from_step"] is None
    a, _ = read_mp4(Path(job.outputs[0]))
    b, _ = read_mp4(Path(again.outputs[0]))
    assert a.shape == b.shape == (9, 128, 128, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
