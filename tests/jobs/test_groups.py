"""Jobs queued as one group (the Intermediate tab's scene + talk) stand or fall together: the queue
cancels the others from the very event that ended one, with no waiting caller involved."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from wan_studio.cluster.executor import JobEvent
from wan_studio.cluster.local import LocalExecutor
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.queue import GROUP, JobQueue
from wan_studio.jobs.store import Job, JobStore


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    """A queue with no workers: jobs only move when the test sends executor events."""
    executor = LocalExecutor(RuntimeConfig(models_dir=str(tmp_path / "m"), outputs_dir=str(tmp_path)), devices=[])
    q = JobQueue(JobStore(tmp_path / "jobs.db"), executor, tmp_path)
    q.start()
    yield q
    q.close()
    q.store.close()


def _submit(q: JobQueue, seed: int, group: str | None) -> Job:
    request = GenerationRequest(prompt=f"job {seed}", seed=seed, width=64, height=64, num_frames=5, steps=1)
    return q.submit(request, extra={GROUP: group} if group else None)


def _event(q: JobQueue, kind: str, job: Job, error: str | None = None) -> None:
    q.executor._sink(JobEvent(kind, job.id, "worker-0", error=error))  # type: ignore[attr-defined]


def test_a_failed_part_cancels_its_queued_partner_in_the_same_event(queue: JobQueue) -> None:
    scene, talk, other = _submit(queue, 1, "pair-1"), _submit(queue, 2, "pair-1"), _submit(queue, 3, None)
    queue.store.transition(scene.id, "running", expect=("queued",), worker="worker-0")
    _event(queue, "failed", scene, "RuntimeError: the scene model broke")
    # No wait(), no sleep: the failed event itself cancelled the partner, so it can never start.
    partner = queue.get(talk.id)
    assert partner.status == "cancelled"
    assert partner.error == f"cancelled because job {scene.id}, queued with it, failed"
    assert queue.get(other.id).status == "queued"  # a job of no group is left alone


def test_a_failed_part_stops_its_running_partner(queue: JobQueue) -> None:
    scene, talk = _submit(queue, 1, "pair-2"), _submit(queue, 2, "pair-2")
    for job in (scene, talk):
        queue.store.transition(job.id, "running", expect=("queued",), worker="worker-0")
    _event(queue, "failed", talk, "ValueError: bad audio")
    assert queue.get(talk.id).status == "failed"
    assert queue.get(scene.id).cancel_requested  # its worker stops after the current step
    _event(queue, "cancelled", scene, "cancelled")
    assert queue.get(scene.id).status == "cancelled"


def test_cancelling_one_waiting_part_cancels_the_other(queue: JobQueue) -> None:
    scene, talk = _submit(queue, 1, "pair-3"), _submit(queue, 2, "pair-3")
    queue.cancel(talk.id)
    assert queue.get(scene.id).status == "cancelled"


def test_a_finished_part_leaves_its_partner_running(queue: JobQueue) -> None:
    scene, talk = _submit(queue, 1, "pair-4"), _submit(queue, 2, "pair-4")
    queue.store.transition(scene.id, "running", expect=("queued",), worker="worker-0")
    queue.executor._sink(JobEvent("done", scene.id, "worker-0", outputs=("a.mp4", "a.json")))  # type: ignore[attr-defined]
    assert queue.get(scene.id).status == "done"
    assert queue.get(talk.id).status == "queued" and not queue.get(talk.id).cancel_requested


def test_a_part_given_up_after_lost_workers_cancels_its_partner(queue: JobQueue) -> None:
    scene, talk = _submit(queue, 1, "pair-5"), _submit(queue, 2, "pair-5")
    queue.store.transition(scene.id, "running", expect=("queued",), worker="worker-0")
    queue.store.update(scene.id, attempts=queue.max_attempts)  # its last attempt
    _event(queue, "lost", scene, "the worker process stopped")
    assert queue.get(scene.id).status == "failed"
    assert queue.get(talk.id).status == "cancelled"
