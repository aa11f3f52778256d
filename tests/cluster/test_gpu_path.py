"""What keeps a real worker process's GPU busy. It loads the app's default model at start, before
any job asks; it writes each mp4 off the GPU's path: the next queued job starts while the previous
one's video is still being written, and a kill -9 during that write still ends with exactly one good
video for every job. The write is held at a gate file, so the order is forced, not timed."""

from __future__ import annotations

import functools
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

TINY = dict(prompt="a red fox in snow", width=64, height=64, num_frames=5, steps=2)
LONG = dict(TINY, total_frames=9, window_overlap=1)  # two windows of 5 frames sharing one


def hold_while_gated(gate: str) -> None:
    """The worker's ``before_write``: note that a write is waiting, then wait while ``gate/hold`` exists."""
    folder = Path(gate)
    (folder / f"held-{time.time_ns()}").touch()
    deadline = time.monotonic() + 300
    while (folder / "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JobQueue, Path]]:
    root = tmp_path_factory.mktemp("bgwrite")
    gate = root / "gate"
    gate.mkdir()
    config = RuntimeConfig(models_dir=str(root / "models"), outputs_dir=str(root / "outputs"),
                           before_write=functools.partial(hold_while_gated, str(gate)),
                           prepare={"model": "demo", **{k: TINY[k] for k in ("width", "height", "num_frames", "steps")}})
    q = JobQueue(JobStore(root / "outputs" / "jobs.db"), LocalExecutor(config, ["cpu"]), root / "outputs")
    q.start()
    yield q, gate
    (gate / "hold").unlink(missing_ok=True)
    q.close()
    q.store.close()


def _until(what: str, check: Any, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _held(gate: Path) -> int:
    return len(list(gate.glob("held-*")))


def _videos(q: JobQueue, seed: int) -> list[Path]:
    return [p for p in q.outputs_dir.rglob("*.mp4") if f"-{seed}-" in p.name]


def _sidecar(job: Job) -> dict[str, Any]:
    return json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())


def test_the_default_model_is_loaded_at_start_before_any_job(gated: tuple[JobQueue, Path]) -> None:
    q, _ = gated
    assert not q.store.list()
    _until("the worker to hold the demo model", lambda: q.executor.workers()[0].loaded == ("demo",))
    job = q.wait(q.submit(GenerationRequest(seed=40, **TINY)).id, timeout_s=300)
    assert job.status == "done", job.error
    side = _sidecar(job)
    assert side["model_was_loaded"] is True and side["load_s"] < 1.0  # same plan: nothing loaded or placed


@pytest.mark.parametrize("first, seeds", [(TINY, (41, 42)), (LONG, (44, 45))], ids=["clip", "long clip"])
def test_the_next_job_starts_before_the_previous_mp4_is_written(gated: tuple[JobQueue, Path], first: dict[str, Any],
                                                                 seeds: tuple[int, int]) -> None:
    q, gate = gated
    (gate / "hold").touch()
    before = _held(gate)
    one = q.submit(GenerationRequest(seed=seeds[0], **first))
    two = q.submit(GenerationRequest(seed=seeds[1], **TINY))
    _until("the first job's write (a long clip's assembly) to be held", lambda: _held(gate) > before)
    # The worker took the second job while the first one's mp4 waits to be written.
    _until("the second job to reach its decode end",
           lambda: (p := q.live_progress(two.id)) is not None and p.stage == "writing")
    assert q.get(one.id).status == "running" and not _videos(q, seeds[0])
    (gate / "hold").unlink()
    a, b = q.wait(one.id, timeout_s=300), q.wait(two.id, timeout_s=300)
    assert (a.status, b.status) == ("done", "done"), (a.error, b.error)
    assert b.started_at < a.finished_at  # type: ignore[operator]
    # The worker's own clock says the same: the second run began before the first video was written.
    side = _sidecar(a)
    assert _sidecar(b)["clock"]["started_at"] < side["clock"]["written_at"]
    assert side["clock"]["mp4_written"] == "off the GPU's path"
    assert side["placement"] and side["speed"] is not None  # the plan and speed options, long clips too
    assert len(_videos(q, seeds[0])) == len(_videos(q, seeds[1])) == 1
    frames = first.get("total_frames") or first["num_frames"]
    assert read_mp4(_videos(q, seeds[0])[0])[0].shape == (frames, 64, 64, 3)
    if first is LONG:
        assert side["long_clip"]["windows"] == 2 and side["long_clip"]["resumed_windows"] == []


@pytest.mark.parametrize("first, seed", [(TINY, 43), (LONG, 46)], ids=["clip", "long clip"])
def test_kill_9_during_the_background_write_leaves_one_good_video(gated: tuple[JobQueue, Path],
                                                                  first: dict[str, Any], seed: int) -> None:
    q, gate = gated
    (gate / "hold").touch()
    before = _held(gate)
    job = q.submit(GenerationRequest(seed=seed, **first))
    _until("the job's write (a long clip's assembly) to be held", lambda: _held(gate) > before)
    assert q.get(job.id).status == "running" and not _videos(q, seed)
    if first is LONG:
        # The last window's mp4 is written on the clip's own thread beside the held assembly.
        manifest = work_dir_of(q.outputs_dir, job.id) / "manifest.json"
        _until("both windows to be kept",
               lambda: manifest.exists() and json.loads(manifest.read_text())["done"] == [0, 1])
    victim = q.executor.workers()[0]
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    (gate / "hold").unlink()  # the restarted worker's retry writes at once
    job = q.wait(job.id, timeout_s=300)
    assert job.status == "done" and job.attempts == 2, job.error
    assert q.executor.workers()[0].pid != victim.pid
    videos = _videos(q, seed)
    assert len(videos) == 1 and str(videos[0]) == job.outputs[0]
    frames = first.get("total_frames") or first["num_frames"]
    assert read_mp4(videos[0])[0].shape == (frames, 64, 64, 3)
    assert len([p for p in q.outputs_dir.rglob("*.json") if f"-{seed}-" in p.name]) == 1
    assert not [p for p in q.outputs_dir.rglob(".*.part")]
    if first is LONG:  # both windows were in place before the kill: the retry renders nothing again
        assert _sidecar(job)["long_clip"]["resumed_windows"] == [0, 1]
