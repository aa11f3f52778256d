"""The queue with a real supervised worker process on the tiny demo model: runs, cancels, crashes."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from wan_studio.cluster.local import LocalExecutor
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.video_io import read_mp4
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import Job, JobStore

TINY = dict(width=64, height=64, num_frames=5, steps=2)
# Many short steps: long enough (about a second or more on a CPU) to be caught mid-way by a kill
# or a cancel sent right after step 2, cheap to run twice.
SLOW = dict(width=128, height=128, num_frames=9, steps=100)


def gone_within(path: Path, within_s: float = 10.0) -> bool:
    """Whether ``path`` is gone within ``within_s`` seconds. The queue records a job done first
    and removes its work folder right after (a crash between the two must still find the
    claim), so a waiter can see "done" a moment before the folder goes."""
    deadline = time.monotonic() + within_s
    while Path(path).exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobQueue]:
    root = tmp_path_factory.mktemp("queue")
    q = JobQueue(JobStore(root / "outputs" / "jobs.db"), LocalExecutor(RuntimeConfig(models_dir=str(root / "models"), outputs_dir=str(root / "outputs")), ["cpu"]),
                 root / "outputs")
    q.start()
    yield q
    q.close()
    q.store.close()


def _req(seed: int, **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox in snow", seed=seed, **{**TINY, **kw})


def _wait_step(q: JobQueue, job_id: str, step: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = q.live_progress(job_id)
        if p is not None and p.stage == "denoising" and p.step >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached step {step}: {q.get(job_id)}")


def _sidecar(job: Job) -> dict[str, Any]:
    return json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())


def test_job_runs_in_a_worker_process_and_the_model_stays_loaded(queue: JobQueue) -> None:
    first = queue.wait(queue.submit(_req(1)).id, timeout_s=600)
    second = queue.wait(queue.submit(_req(2)).id, timeout_s=300)
    assert (first.status, second.status) == ("done", "done"), (first.error, second.error)
    frames, fps = read_mp4(Path(second.outputs[0]))
    assert frames.shape == (5, 64, 64, 3) and fps == 8
    worker = queue.executor.workers()[0]
    assert worker.pid != os.getpid() and worker.loaded == ("demo",)
    assert _sidecar(second)["model_was_loaded"] is True and _sidecar(second)["job_id"] == second.id
    assert second.worker == worker.name and second.attempts == 1
    # A process group of its own: a Ctrl-C in the app's terminal reaches the app alone (which stops
    # its workers after their jobs), never the worker or an ffmpeg writing one of its mp4s.
    assert os.getpgid(worker.pid) == worker.pid != os.getpgid(0)  # type: ignore[arg-type]


def test_jobs_run_in_priority_order(queue: JobQueue) -> None:
    blocker = queue.submit(_req(3, **SLOW))
    _wait_step(queue, blocker.id, 1)
    low = queue.submit(_req(4))
    high = queue.submit(_req(5), priority=3)
    queue.cancel(blocker.id)
    done = [queue.wait(j.id, timeout_s=300) for j in (low, high)]
    assert all(j.status == "done" for j in done)
    assert done[1].started_at < done[0].started_at  # type: ignore[operator]


def test_cancel_running_job_stops_it_and_writes_nothing(queue: JobQueue) -> None:
    job = queue.submit(_req(6, **SLOW))
    _wait_step(queue, job.id, 2)
    before = set(queue.outputs_dir.rglob("*.mp4"))
    queue.cancel(job.id)
    job = queue.wait(job.id, timeout_s=300)
    assert job.status == "cancelled" and "cancelled" in (job.error or "")
    assert set(queue.outputs_dir.rglob("*.mp4")) == before


def test_kill_9_worker_mid_job_then_the_job_finishes_after_restart(queue: JobQueue) -> None:
    job = queue.submit(_req(7, **SLOW))
    _wait_step(queue, job.id, 2)
    victim = queue.executor.workers()[0]
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    job = queue.wait(job.id, timeout_s=300)
    assert job.status == "done", job.error
    assert job.attempts == 2
    worker = queue.executor.workers()[0]
    assert worker.pid != victim.pid and worker.restarts == victim.restarts + 1
    assert worker.last_exit == "killed by signal SIGKILL"
    frames, _ = read_mp4(Path(job.outputs[0]))
    assert frames.shape[0] == 9
    assert len([p for p in queue.outputs_dir.rglob("*.mp4") if f"-7-" in p.name]) == 1


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_full_disk_fails_the_job_with_the_reason_and_keeps_earlier_outputs(queue: JobQueue) -> None:
    day = queue.outputs_dir / f"{_dt.datetime.now():%Y-%m-%d}"
    if not _mount_tmpfs(day, "512k"):
        pytest.skip("needs root to mount a small tmpfs (the injected-ENOSPC test covers the rest)")
    try:
        ok = queue.wait(queue.submit(_req(8)).id, timeout_s=300)
        assert ok.status == "done", ok.error
        kept = {p: p.read_bytes() for p in map(Path, ok.outputs)}
        with open(day / "filler", "wb") as f:  # take every byte that is left
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        failed = queue.wait(queue.submit(_req(9, width=128, height=128)).id, timeout_s=300)
        assert failed.status == "failed"
        assert "is full (" in (failed.error or "") and failed.outputs == []
        assert {p: p.read_bytes() for p in kept} == kept
        assert read_mp4(next(p for p in kept if p.suffix == ".mp4"))[0].shape == (5, 64, 64, 3)
        assert not [p for p in day.iterdir() if p.name.startswith(".")]  # no partial temp file left
        assert queue.executor.workers()[0].state == "idle"  # the worker survived
    finally:
        subprocess.run(["umount", "-l", str(day)], check=False)


def test_workers_started_before_the_app_imports_torch_prepare_the_default_model_for_the_first_job(settings: Any) -> None:
    # app.py starts its worker processes first (their imports and the default model's load then run
    # beside the app's own imports): starting them must not import torch, Gradio or the services.
    import sys

    probe = ("import sys; from wan_studio.settings import Settings; from wan_studio.cluster.local import "
             "launch_workers; w = launch_workers(Settings(models_dir=sys.argv[1], outputs_dir=sys.argv[2])); "
             "print(sorted(m for m in ('torch', 'gradio', 'diffusers', 'wan_studio.services') if m in sys.modules)); "
             "w.shutdown(timeout_s=0.1)")
    out = subprocess.run([sys.executable, "-c", probe, str(settings.models_dir), str(settings.outputs_dir) + "-probe"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]

    from wan_studio.cluster.local import launch_workers
    from wan_studio.services import Studio

    workers = launch_workers(settings)
    assert workers is not None
    studio = None
    try:
        deadline = time.monotonic() + 120
        while workers.workers()[0].state != "idle":  # up before the services exist
            assert time.monotonic() < deadline, workers.workers()
            time.sleep(0.05)
        assert workers.workers()[0].loaded == ()  # nothing to prepare was known yet
        studio = Studio.create(settings, workers=workers)  # tells it the default model: the demo
        studio.start()
        while "demo" not in workers.workers()[0].loaded:
            assert time.monotonic() < deadline, workers.workers()
            time.sleep(0.05)
        done = studio.queue.wait(studio.submit(_req(5, model="demo")).id, timeout_s=120)
        assert done.status == "done", done.error
        assert _sidecar(done)["model_was_loaded"] is True
    finally:
        if studio is not None:
            studio.close()
        workers.shutdown()
