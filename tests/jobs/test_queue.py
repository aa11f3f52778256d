"""Queue operations on a real store with no worker processes (jobs wait): order, limits, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from wan_studio.cluster.executor import JobEvent
from wan_studio.cluster.local import LocalExecutor
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.engine.job import claim_outputs, work_dir_of
from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.jobs.queue import JobQueue, QueuedProgress
from wan_studio.jobs.store import IllegalTransition, JobStore, QueueFull


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    executor = LocalExecutor(RuntimeConfig(models_dir=str(tmp_path / "m"), outputs_dir=str(tmp_path)), devices=[])
    q = JobQueue(JobStore(tmp_path / "jobs.db"), executor, tmp_path,
                 max_length=5)
    q.start()
    yield q
    q.close()
    q.store.close()


def _req(seed: int) -> GenerationRequest:
    return GenerationRequest(prompt=f"job {seed}", seed=seed, width=64, height=64, num_frames=5, steps=1)


def _order(q: JobQueue) -> list[int]:
    return [j.request["seed"] for j in q.store.queued_in_order()]


def test_move_top_up_down_bottom(queue: JobQueue) -> None:
    jobs = {s: queue.submit(_req(s)) for s in range(4)}
    queue.move(jobs[3].id, "top")
    assert _order(queue) == [3, 0, 1, 2]
    queue.move(jobs[1].id, "up")
    assert _order(queue) == [3, 1, 0, 2]
    queue.move(jobs[3].id, "down")
    assert _order(queue) == [1, 3, 0, 2]
    queue.move(jobs[1].id, "bottom")
    assert _order(queue) == [3, 0, 2, 1]


def test_priority_jumps_the_line_and_moving_past_it_takes_its_priority(queue: JobQueue) -> None:
    a, b, c = (queue.submit(_req(s)) for s in range(3))
    queue.set_priority(c.id, 5)
    assert _order(queue) == [2, 0, 1]
    queue.move(b.id, "top")
    assert _order(queue) == [1, 2, 0]
    assert queue.get(b.id).priority == 5


def test_queue_full_message_and_nothing_half_added(queue: JobQueue) -> None:
    for s in range(4):
        queue.submit(_req(s))
    with pytest.raises(QueueFull, match=r"queue is full \(4 unfinished jobs, limit 5\)"):
        queue.submit_many([_req(10), _req(11)])
    assert queue.store.count_active() == 4
    assert isinstance(QueueFull("x"), RequestError)  # the UI shows it like any input problem


def test_bad_request_is_refused_before_anything_is_stored(queue: JobQueue) -> None:
    with pytest.raises(RequestError, match="multiple of 32"):
        queue.submit(GenerationRequest(prompt="x", width=70, height=64))
    assert queue.store.list() == []


def test_seed_is_fixed_at_submission_so_a_rerun_repeats_the_video(queue: JobQueue) -> None:
    job = queue.submit(GenerationRequest(prompt="x", seed=None, width=64, height=64, num_frames=5, steps=1))
    assert isinstance(job.request["seed"], int) and job.request["seed"] >= 0


def test_uploaded_image_is_copied_next_to_the_outputs(queue: JobQueue, image_file: Path) -> None:
    job = queue.submit(GenerationRequest(prompt="x", image=str(image_file), width=64, height=64,
                                         num_frames=5, steps=1))
    kept = Path(job.request["image"])
    image_file.unlink()  # the upload folder is cleaned up later: the job must not care
    assert kept.parent == queue.outputs_dir / ".inputs" and kept.read_bytes()[:4] == b"\x89PNG"


def test_cancel_queued_then_retry_then_pause_resume_delete(queue: JobQueue) -> None:
    job = queue.submit(_req(1))
    assert queue.cancel(job.id).status == "cancelled"
    with pytest.raises(IllegalTransition):
        queue.cancel(job.id)
    assert queue.retry(job.id).status == "queued"
    assert queue.pause(job.id).status == "paused"
    assert _order(queue) == []
    assert queue.resume(job.id).status == "queued"
    queue.delete(job.id)
    assert queue.store.list() == []


def test_cancel_owner_only_touches_that_owners_jobs(queue: JobQueue) -> None:
    mine = [queue.submit(_req(s), owner="me") for s in range(2)]
    theirs = queue.submit(_req(9), owner="them")
    assert queue.cancel_owner("me") == 2
    assert [queue.get(j.id).status for j in mine] == ["cancelled", "cancelled"]
    assert queue.get(theirs.id).status == "queued"


def test_waiting_job_reports_how_many_are_ahead(queue: JobQueue) -> None:
    jobs = [queue.submit(_req(s)) for s in range(3)]
    p = queue.progress_of(queue.get(jobs[2].id))
    assert isinstance(p, QueuedProgress) and p.message == "waiting in the queue (2 jobs ahead)"
    assert p.fraction == 0.0


def _interrupted_attempt(q: JobQueue, job_id: str, sidecar_written: bool) -> tuple[Path, Path]:
    """What a worker killed after writing a job's video (and maybe its sidecar) leaves behind."""
    q.store.transition(job_id, "running", expect=("queued",), worker="worker-0")
    request = GenerationRequest.from_dict(q.get(job_id).request)
    video, sidecar = claim_outputs(q.outputs_dir, work_dir_of(q.outputs_dir, job_id), request)
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"an mp4")
    if sidecar_written:
        sidecar.write_text(json.dumps({"job_id": job_id}))
    return video, sidecar


def test_a_job_whose_worker_died_after_writing_everything_is_done_not_rerun(queue: JobQueue) -> None:
    job = queue.submit(_req(1))
    video, sidecar = _interrupted_attempt(queue, job.id, sidecar_written=True)
    queue.executor._sink(JobEvent("lost", job.id, "worker-0", error="the worker process stopped"))  # type: ignore[attr-defined]
    done = queue.get(job.id)
    assert done.status == "done" and done.outputs == [str(video), str(sidecar)]


def test_a_job_given_up_after_an_interrupted_write_leaves_no_video(queue: JobQueue) -> None:
    job = queue.submit(_req(2))
    video, _ = _interrupted_attempt(queue, job.id, sidecar_written=False)
    queue.store.update(job.id, attempts=queue.max_attempts)  # this was its last attempt
    queue.executor._sink(JobEvent("lost", job.id, "worker-0", error="the worker process stopped"))  # type: ignore[attr-defined]
    assert queue.get(job.id).status == "failed"
    assert not video.exists()


def test_a_job_given_up_after_sigkills_says_the_computer_likely_ran_out_of_ram(queue: JobQueue) -> None:
    job = queue.submit(_req(3))
    queue.store.transition(job.id, "running", expect=("queued",), worker="worker-0")
    queue.store.update(job.id, attempts=queue.max_attempts)  # this was its last attempt
    queue.executor._sink(JobEvent("lost", job.id, "worker-0",  # type: ignore[attr-defined]
                                  error="the worker process killed by signal SIGKILL"))
    failed = queue.get(job.id)
    assert failed.status == "failed" and "run out of the computer's RAM" in failed.error
    assert "SIGKILL during each of 3 attempts" in failed.error


def test_a_requeued_job_cancelled_while_it_waits_leaves_no_video(queue: JobQueue) -> None:
    """Its first attempt put the mp4 in place and the worker died before the sidecar; the job waits
    for its retry and its owner cancels it: the video it will never own goes too."""
    job = queue.submit(_req(4))
    video, _ = _interrupted_attempt(queue, job.id, sidecar_written=False)
    queue.executor._sink(JobEvent("lost", job.id, "worker-0", error="the worker process stopped"))  # type: ignore[attr-defined]
    assert queue.get(job.id).status == "queued" and video.exists()  # waiting for its retry
    assert queue.cancel(job.id).status == "cancelled"
    assert not video.exists()


def test_a_requeued_job_deleted_while_it_waits_leaves_no_video(queue: JobQueue) -> None:
    job = queue.submit(_req(5))
    video, _ = _interrupted_attempt(queue, job.id, sidecar_written=False)
    queue.executor._sink(JobEvent("lost", job.id, "worker-0", error="the worker process stopped"))  # type: ignore[attr-defined]
    assert queue.get(job.id).status == "queued" and video.exists()
    queue.delete(job.id)
    assert not video.exists()
