"""A job pinned to one GPU (Advanced tab override) is dispatched only to that GPU's worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from wan_studio.cluster.executor import EventSink, Executor, WorkerInfo
from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import JobStore


class TwoGpus(Executor):
    """Two workers that accept jobs and hold them (nothing runs): records where each job went."""

    def __init__(self) -> None:
        self.busy: dict[str, str] = {}  # worker -> job id

    def start(self, on_event: EventSink) -> None:
        self.sink = on_event

    def _all(self) -> list[WorkerInfo]:
        return [WorkerInfo(f"worker-{i}", f"cuda:{i}", "busy" if f"worker-{i}" in self.busy else "idle", None,
                           self.busy.get(f"worker-{i}"), (), 0) for i in range(2)]

    def idle_workers(self) -> list[WorkerInfo]:
        return [w for w in self._all() if w.state == "idle"]

    def submit(self, worker: str, job_id: str, request: Any, extra: dict[str, Any] | None = None) -> None:
        self.busy[worker] = job_id

    def cancel(self, job_id: str) -> bool:
        return False

    def workers(self) -> list[WorkerInfo]:
        return self._all()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        pass


def test_pinned_job_waits_for_its_gpu_and_unpinned_jobs_pass_it(tmp_path: Path) -> None:
    ex = TwoGpus()
    q = JobQueue(JobStore(tmp_path / "jobs.db"), ex, tmp_path)
    q.start()
    try:
        pinned = q.submit(GenerationRequest(prompt="pinned", overrides={"gpu": "cuda:1"}))
        deadline = time.monotonic() + 10
        while "worker-1" not in ex.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ex.busy == {"worker-1": pinned.id}  # worker-0 was idle and listed first, yet skipped
        second = q.submit(GenerationRequest(prompt="also pinned", overrides={"gpu": "cuda:1"}))
        free = q.submit(GenerationRequest(prompt="anywhere"))
        deadline = time.monotonic() + 10
        while "worker-0" not in ex.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert q.get(second.id).status == "queued"  # waits for GPU 1 rather than taking GPU 0
        assert ex.busy["worker-0"] == free.id  # a later unpinned job is not held up behind it
    finally:
        q.close()
        q.store.close()
