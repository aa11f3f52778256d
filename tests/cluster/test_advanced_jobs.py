"""Advanced jobs through the real queue and worker process: long clips resume after a crash; LoRAs,
step caches and plan overrides reach the job and its sidecar."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from wan_studio.cluster.local import LocalExecutor
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.engine.job import work_dir_of
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.video_io import read_mp4
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import Job, JobStore
from tests.cluster.test_local import gone_within
from tests.engine.test_lora_and_caches import make_lora

# 4 windows of 5 frames, 1 shared: 17 frames. Enough steps per window to be caught mid-way.
LONG = dict(width=64, height=64, num_frames=5, total_frames=17, window_overlap=1, steps=40)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wan_studio.catalog.tiny import build_transformer

    root = tmp_path_factory.mktemp("advanced")
    make_lora(build_transformer(48, 48, seed=5), root / "loras", "style.safetensors")
    return root


@pytest.fixture(scope="module")
def queue(root: Path) -> Iterator[JobQueue]:
    q = JobQueue(JobStore(root / "outputs" / "jobs.db"),
                 LocalExecutor(RuntimeConfig(models_dir=str(root / "models"), outputs_dir=str(root / "outputs"),
                                             loras_dir=str(root / "loras")), ["cpu"]),
                 root / "outputs")
    q.start()
    yield q
    q.close()
    q.store.close()


def _sidecar(job: Job) -> dict[str, Any]:
    return json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())


def test_killed_worker_resumes_a_long_clip_at_the_first_missing_window(queue: JobQueue) -> None:
    job = queue.submit(GenerationRequest(prompt="a river at dawn", seed=3, **LONG))
    messages: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until windows 1 and 2 are saved and window 3 runs
        p = queue.live_progress(job.id)
        if p is not None:
            messages.append(p.message)
            if p.window == 2 and p.stage == "denoising" and p.step >= 2:
                break
        time.sleep(0.01)
    else:
        raise AssertionError(f"never reached window 3: {queue.get(job.id)}")
    work = work_dir_of(queue.outputs_dir, job.id)
    assert sorted(p.name for p in work.glob("window-*.mp4")) == ["window-000.mp4", "window-001.mp4"]
    os.kill(queue.executor.workers()[0].pid, signal.SIGKILL)  # type: ignore[arg-type]

    job = queue.wait(job.id, timeout_s=180)
    assert job.status == "done", job.error
    assert job.attempts == 2
    clip = _sidecar(job)["long_clip"]
    assert clip["resumed_windows"] == [0, 1]  # only windows 3 and 4 were made again
    assert clip["windows"] == 4
    frames, _ = read_mp4(Path(job.outputs[0]))
    assert frames.shape[0] == 17
    assert any(m.startswith("window 3/4 · step ") for m in messages), messages[-5:]
    assert gone_within(work)  # the work folder goes once the clip is written


def test_lora_step_cache_and_overrides_are_listed_in_the_sidecar(queue: JobQueue) -> None:
    req = GenerationRequest(prompt="a lantern", seed=5, width=64, height=64, num_frames=5, steps=4,
                            loras=[{"file": "style.safetensors", "weight": 0.7}], step_cache="first_block",
                            cache_threshold=0.2, overrides={"offload": "cpu", "attention": "sdpa"})
    job = queue.wait(queue.submit(req).id, timeout_s=600)
    assert job.status == "done", job.error
    side = _sidecar(job)
    assert side["loras"] == [{"file": "style.safetensors", "weight": 0.7, "layout": "diffusers"}]
    assert side["step_cache"]["kind"] == "first_block" and side["step_cache"]["trades"] == "quality for speed"
    assert side["overrides"] == {"offload": "cpu", "attention": "sdpa"}
    assert side["attention_backend"] == "sdpa"
    assert {p["offload"] for p in side["plan"]["placements"]} == {"cpu"}


def test_a_lora_missing_from_the_folder_fails_the_job_with_its_name(queue: JobQueue) -> None:
    req = GenerationRequest(prompt="a lantern", seed=6, width=64, height=64, num_frames=5, steps=2,
                            loras=["nope.safetensors:1.0"])
    job = queue.wait(queue.submit(req).id, timeout_s=600)
    assert job.status == "failed"
    assert "nope.safetensors" in (job.error or "") and "style.safetensors" in (job.error or "")
