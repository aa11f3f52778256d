"""A request is prepared once at submission (validated, resolved, planned) and travels typed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from wan_studio.cluster.executor import Executor, WorkerInfo
from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import JobStore

TINY = dict(prompt="a fox", model="demo", width=64, height=64, num_frames=5, steps=1, seed=3)


def test_a_submit_validates_and_plans_once(studio: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import wan_studio.jobs.queue as queue_module
    import wan_studio.services as services

    calls = {"validate": 0, "plan": 0}
    real_validate, real_plans = services.validate, type(studio).plans

    def validate(*args: Any, **kwargs: Any) -> Any:
        calls["validate"] += 1
        return real_validate(*args, **kwargs)

    def plans(self: Any, request: GenerationRequest) -> Any:
        calls["plan"] += 1
        return real_plans(self, request)

    monkeypatch.setattr(services, "validate", validate)
    monkeypatch.setattr(queue_module, "validate", validate)
    monkeypatch.setattr(type(studio), "plans", plans)
    job = studio.submit(GenerationRequest(**TINY))
    assert calls == {"validate": 1, "plan": 1}
    assert job.extra["planned_at_submit"] == studio.plans(GenerationRequest(**TINY).resolved())[0].label
    assert studio.queue.wait(job.id, timeout_s=120).status == "done"


class _Recorder(Executor):
    """One idle worker that keeps what it is given and never finishes it."""

    def __init__(self) -> None:
        self.given: list[Any] = []

    def start(self, on_event: Any) -> None:
        pass

    def idle_workers(self) -> list[WorkerInfo]:
        return [WorkerInfo("w", "cpu", "idle", None, None, (), 0)] if not self.given else []

    def submit(self, worker: str, job_id: str, request: Any, extra: dict[str, Any] | None = None) -> None:
        self.given.append(request)

    def cancel(self, job_id: str) -> bool:
        return False

    def workers(self) -> list[WorkerInfo]:
        return self.idle_workers()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        pass


def test_the_executor_gets_the_request_typed_with_its_seed_fixed(tmp_path: Path) -> None:
    executor = _Recorder()
    q = JobQueue(JobStore(tmp_path / "jobs.db"), executor, tmp_path)
    q.start()
    try:
        q.submit(GenerationRequest(**{**TINY, "seed": None}))
        deadline = time.monotonic() + 30
        while not executor.given and time.monotonic() < deadline:
            time.sleep(0.05)
        (given,) = executor.given
        assert isinstance(given, GenerationRequest) and given.model == "demo" and isinstance(given.seed, int)
    finally:
        q.close()
        q.store.close()
