"""The job store's promises, one by one, as the queue, the Queue tab and the file route rely on them:
what each read returns, what each write changes, and the sentence of each refusal."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from wan_studio.jobs.store import (MIGRATIONS, DamagedStore, IllegalTransition, JobNotFound, JobStore, NewJob,
                                   QueueFull, RestoredJob, StoreError, StoreUnwritable)

from tests.jobs.test_store import _new, store  # noqa: F401  (the store fixture and job maker both files use)


def _done(store: JobStore, outputs: list[str], **kw: object) -> str:
    [job] = store.add(_new(1, **kw))
    store.transition(job.id, "running")
    store.transition(job.id, "done", outputs=outputs)
    return job.id


# --- opening -------------------------------------------------------------------------------------
def test_a_store_in_new_nested_folders_is_created_and_reopens_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "state" / "studio" / "jobs.db"
    s = JobStore(path)
    [job] = s.add(_new(1, owner="me"))
    s.close()
    again = JobStore(path)  # a file at the current schema opens as it is
    try:
        assert again.schema_version == len(MIGRATIONS)
        assert again.get(job.id).request == job.request and again.get(job.id).owner == "me"
    finally:
        again.close()


def test_an_empty_file_is_refused_saying_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "jobs.db").write_bytes(b"")
    with pytest.raises(DamagedStore, match=r"cannot be read \(the file is empty \(0 bytes\)\)"):
        JobStore(tmp_path / "jobs.db")


def test_damaged_pages_are_refused_naming_what_sqlite_found(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    s = JobStore(path)
    s.add([NewJob({"prompt": "x" * 500, "seed": i}) for i in range(200)])
    s.close()
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    for page in (3, 5, 7, 9):  # scribble over a few b-tree pages, keep the header
        data[page * 4096 + 8: page * 4096 + 200] = bytes(rng.randrange(256) for _ in range(192))
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedStore, match=r"(?s)cannot be read \(\*\*\* in database main \*\*\*.*out of range"):
        JobStore(path)
    assert path.read_bytes() == bytes(data)  # left exactly as it was


def test_a_database_that_cannot_be_created_says_to_check_the_folder(tmp_path: Path) -> None:
    link = tmp_path / "jobs.db"
    link.symlink_to(tmp_path / "no-such-folder" / "jobs.db")  # SQLite would create the file there
    with pytest.raises(StoreError, match=r"cannot create the job database .*jobs\.db: .*check that the folder is "
                                         r"writable"):
        JobStore(link)


# --- reads ---------------------------------------------------------------------------------------
def test_an_unknown_job_is_named_in_every_refusal(store: JobStore) -> None:
    for call in (lambda: store.get("nope"), lambda: store.transition("nope", "cancelled"),
                 lambda: store.delete("nope")):
        with pytest.raises(JobNotFound, match="no job with id 'nope'"):
            call()


def test_the_list_shows_running_then_queued_then_paused_then_finished_newest_first(store: JobStore) -> None:
    finished_old = _done(store, ["/o/a.mp4"])
    finished_new = _done(store, ["/o/b.mp4"])
    paused, queued_low, queued_high, running = store.add(_new(4))
    store.transition(paused.id, "paused")
    store.set_order(queued_high.id, priority=3, position=queued_high.position)
    store.transition(running.id, "running")
    order = [j.id for j in store.list()]
    assert order == [running.id, queued_high.id, queued_low.id, paused.id, finished_new, finished_old]
    assert [j.id for j in store.list(("done",))] == [finished_new, finished_old]
    assert len(store.list(limit=2)) == 2


def test_newest_first_is_by_submission_time_not_by_when_a_job_ended(store: JobStore) -> None:
    [older] = store.add(_new(1))
    [newer] = store.add(_new(1))
    for job in (newer, older):  # the newer one finishes first
        store.transition(job.id, "running")
        store.transition(job.id, "done", outputs=[])
    assert [j.id for j in store.list()] == [older.id, newer.id]  # the queue view: last finished first
    assert [j.id for j in store.list(newest_first=True)] == [newer.id, older.id]


def test_waiting_jobs_of_one_priority_list_in_their_dispatch_order_not_by_last_change(store: JobStore) -> None:
    a, b, c = (store.add(_new(1))[0] for _ in range(3))
    store.set_order(a.id, priority=0, position=c.position + 1)  # a moved to the end (changed last)
    store.transition(b.id, "paused")
    store.set_order(b.id, priority=0, position=b.position)
    assert [j.id for j in store.list()] == [c.id, a.id, b.id]
    assert [j.id for j in store.list(("queued", "paused"))] == [c.id, a.id, b.id]


def test_active_jobs_are_counted_per_user(store: JobStore) -> None:
    store.add(_new(2, user="ann"))
    store.add(_new(1, user="bob"))
    _done(store, ["/o/c.mp4"], user="ann")
    assert (store.count_active(), store.count_active("ann"), store.count_active("bob")) == (3, 2, 1)
    assert store.count_active("carl") == 0


def test_queued_ahead_and_next_for_jobs_not_waiting(store: JobStore) -> None:
    assert store.next_queued() is None  # an empty queue
    a, b = store.add(_new(2))
    assert (store.queued_ahead(a.id), store.queued_ahead(b.id)) == (0, 1)
    store.transition(a.id, "running")
    assert store.queued_ahead(a.id) == 0 and store.queued_ahead(b.id) == 0
    store.transition(b.id, "running")
    assert store.next_queued() is None


def test_done_with_output_finds_only_finished_jobs_holding_that_file_name(store: JobStore) -> None:
    mine = _done(store, ['/o/it"s é.mp4', '/o/it"s é.json'])
    _done(store, ["/o/other.mp4"])
    _done(store, ['/o/it"s é.mp"'])  # one character short of the name
    _done(store, ['/o/at"s é.mp4'])  # another first character
    [running] = store.add(_new(1))
    store.transition(running.id, "running")
    store.update(running.id, outputs=['/o/it"s é.mp4'])
    assert [j.id for j in store.done_with_output('it"s é.mp4')] == [mine]
    assert store.done_with_output("missing.mp4") == []


def test_a_row_with_json_of_the_wrong_shape_reads_as_empty(store: JobStore) -> None:
    [job] = store.add(_new(1))
    with store._tx() as c:
        c.execute("UPDATE jobs SET request = '[1, 2]', outputs = '{\"a\": 1}', extra = '3' WHERE id = ?", (job.id,))
    got = store.get(job.id)
    assert (got.request, got.outputs, got.extra) == ({}, [], {})


# --- writes --------------------------------------------------------------------------------------
def test_a_full_queue_says_how_many_were_submitted_together(store: JobStore) -> None:
    store.add(_new(2))
    with pytest.raises(QueueFull, match=r"limit 3\); wait for some to finish .* \(2 jobs were in this "
                                        r"submission\)$"):
        store.add(_new(2), max_active=3)
    with pytest.raises(QueueFull, match=r"then submit again$"):
        store.add(_new(2)[:1], max_active=2)


def test_jobs_submitted_together_queue_after_the_others_in_their_order(store: JobStore) -> None:
    [first] = store.add(_new(1))
    batch = store.add(_new(3))
    assert [j.position for j in batch] == [first.position + 1, first.position + 2, first.position + 3]
    assert [j.id for j in store.queued_in_order()] == [first.id, *(j.id for j in batch)]


def test_restored_jobs_come_back_done_once_each(store: JobStore) -> None:
    restored = [RestoredJob("r1", {"prompt": "a mill", "seed": 4}, ["/o/r1.mp4", "/o/r1.json"], 1000.0, user="ann"),
                RestoredJob("r2", {"prompt": "a kite"}, ["/o/r2.mp4", "/o/r2.json"], 2000.0, owner="s1")]
    assert store.restore_done(restored) == 2
    assert store.restore_done(restored) == 0  # already there: nothing new, nothing doubled
    r1 = store.get("r1")
    assert (r1.status, r1.request, r1.outputs, r1.user, r1.finished_at) == (
        "done", {"prompt": "a mill", "seed": 4}, ["/o/r1.mp4", "/o/r1.json"], "ann", 1000.0)
    assert store.get("r2").owner == "s1" and [j.id for j in store.done_with_output("r2.mp4")] == ["r2"]
    [new] = store.add(_new(1))
    assert store.restore_done([restored[0], RestoredJob(new.id, {}, [], 3.0)]) == 0  # an id present wins
    assert store.get(new.id).status == "queued"


def test_an_unknown_status_is_refused_by_name(store: JobStore) -> None:
    [job] = store.add(_new(1))
    with pytest.raises(IllegalTransition, match="unknown status 'finished'"):
        store.transition(job.id, "finished")  # type: ignore[arg-type]


def test_transitions_stamp_start_and_end_and_a_requeue_clears_what_the_attempt_left(store: JobStore) -> None:
    [job] = store.add(_new(1))
    running = store.transition(job.id, "running", worker="w0")
    assert running.started_at is not None and running.started_at >= job.created_at and running.finished_at is None
    store.update(job.id, progress=0.5, progress_text="step 3/6", eta_s=12.0)
    store.transition(job.id, "failed", error="boom")
    failed = store.get(job.id)
    assert failed.finished_at is not None and failed.finished_at >= running.started_at
    again = store.transition(job.id, "queued")
    assert (again.progress, again.progress_text, again.eta_s, again.worker, again.finished_at) == (
        0.0, "", None, None, None)


def test_the_log_says_a_running_job_was_cancelled_while_running(store: JobStore, caplog) -> None:
    [job] = store.add(_new(1))
    store.transition(job.id, "running")
    with caplog.at_level(logging.INFO, logger="wan_studio.jobs"):
        store.transition(job.id, "cancelled")
    assert f"job {job.id} cancelled while running" in caplog.text


def test_update_refuses_a_status_and_unknown_fields_and_says_whether_it_applied(store: JobStore) -> None:
    [job] = store.add(_new(1))
    with pytest.raises(IllegalTransition, match=r"use transition\(\) to change a status"):
        store.update(job.id, status="done")
    for field in ("colour", "id"):
        with pytest.raises(ValueError, match=f"unknown job field '{field}'"):
            store.update(job.id, when_status=("queued",), **{field: "x"})
    assert store.update(job.id, when_status=("queued",), request={"prompt": "new"}, extra={"k": [1]}) is True
    assert (store.get(job.id).request, store.get(job.id).extra) == ({"prompt": "new"}, {"k": [1]})
    assert store.update(job.id, progress=0.3) is False  # not running
    assert store.update("nope", progress=0.3) is False


def test_a_paused_job_can_be_reordered(store: JobStore) -> None:
    a, b = store.add(_new(2))
    store.transition(b.id, "paused")
    moved = store.set_order(b.id, priority=2, position=0.5)
    assert (moved.priority, moved.position) == (2, 0.5)


def test_sweep_cancels_a_job_whose_cancel_was_asked_before_the_stop(store: JobStore) -> None:
    [job] = store.add(_new(1))
    store.transition(job.id, "running")
    store.update(job.id, cancel_requested=True)
    [swept] = store.sweep()
    assert (swept.status, swept.error) == ("cancelled", "cancelled while the app was stopped")


def test_a_full_database_says_the_disk_holding_it_is_full_and_keeps_what_was_there(store: JobStore) -> None:
    [kept] = store.add(_new(1))
    with store._tx() as c:  # SQLite answers "database or disk is full" once the file may not grow
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        c.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnwritable, match=rf"the disk holding {store.path.parent}.* is full .*; the job list "
                                              r"cannot be updated until space is freed"):
        store.add([NewJob({"prompt": "x" * 200_000})])
    assert [j.id for j in store.list()] == [kept.id]
