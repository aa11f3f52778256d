"""The job store on real SQLite files: transitions, migrations, sweep, damaged files, queue limit."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from wan_studio.jobs.store import (ALLOWED, MIGRATIONS, AppLock, DamagedStore, IllegalTransition, JobStore, NewJob,
                                   QueueFull, StoreError)


def _new(n: int = 1, **kw: object) -> list[NewJob]:
    return [NewJob({"prompt": f"p{i}", "model": "demo", "seed": i}, **kw) for i in range(n)]  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_new_file_is_wal_at_latest_schema(store: JobStore) -> None:
    assert store.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_add_then_get_round_trips_request(store: JobStore) -> None:
    [job] = store.add(_new(1, owner="me", priority=2))
    got = store.get(job.id)
    assert (got.status, got.owner, got.priority, got.request["prompt"]) == ("queued", "me", 2, "p0")


def test_nothing_leaves_done(store: JobStore) -> None:
    [job] = store.add(_new())
    store.transition(job.id, "running")
    store.transition(job.id, "done", outputs=["a.mp4"])
    for target in ("queued", "running", "failed", "cancelled", "paused"):
        with pytest.raises(IllegalTransition):
            store.transition(job.id, target)  # type: ignore[arg-type]
    assert store.get(job.id).status == "done"
    assert ALLOWED["done"] == frozenset()


def test_queued_cannot_jump_to_done(store: JobStore) -> None:
    [job] = store.add(_new())
    with pytest.raises(IllegalTransition, match="queued; it cannot become done"):
        store.transition(job.id, "done")


def test_running_counts_attempts_and_requeue_clears_progress(store: JobStore) -> None:
    [job] = store.add(_new())
    store.transition(job.id, "running", worker="w0")
    store.update(job.id, progress=0.5, progress_text="step 3/6")
    job = store.transition(job.id, "queued")
    assert (job.attempts, job.progress, job.worker) == (1, 0.0, None)
    assert store.transition(job.id, "running").attempts == 2


def test_update_is_dropped_once_the_job_moved_on(store: JobStore) -> None:
    [job] = store.add(_new())
    store.transition(job.id, "running")
    store.transition(job.id, "cancelled")
    assert store.update(job.id, progress=0.9) is False
    assert store.get(job.id).progress == 0.0


def test_dispatch_order_is_priority_then_submission(store: JobStore) -> None:
    a, b = store.add(_new(2))
    [c] = store.add(_new(1, priority=5))
    assert [j.id for j in store.queued_in_order()] == [c.id, a.id, b.id]
    assert store.next_queued().id == c.id  # type: ignore[union-attr]


def test_queue_full_is_all_or_none(store: JobStore) -> None:
    store.add(_new(3), max_active=4)
    with pytest.raises(QueueFull, match="queue is full"):
        store.add(_new(2), max_active=4)
    assert store.count_active() == 3


def test_concurrent_adds_never_overshoot_the_limit(store: JobStore) -> None:
    accepted, refused = [], []

    def one() -> None:
        try:
            accepted.extend(store.add(_new(1), max_active=25))
        except QueueFull:
            refused.append(1)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(accepted), len(refused), store.count_active()) == (25, 15, 25)


def test_sweep_requeues_running_and_fails_exhausted(store: JobStore) -> None:
    a, b, c, d = store.add(_new(4, max_attempts=2))
    store.transition(a.id, "running")
    for _ in range(2):
        store.transition(b.id, "running")
        if store.get(b.id).attempts < 2:
            store.transition(b.id, "queued")
    store.transition(c.id, "running")
    store.update(c.id, cancel_requested=True)
    swept = {j.id: j for j in store.sweep()}
    assert swept[a.id].status == "queued" and "attempt 1" in (swept[a.id].error or "")
    assert swept[b.id].status == "failed" and "2 times" in (swept[b.id].error or "")
    assert swept[c.id].status == "cancelled"
    assert store.get(d.id).status == "queued" and d.id not in swept


def test_migrates_a_version_1_file_keeping_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (id, request, status, position, created_at, updated_at) "
                 "VALUES ('old1', '{\"prompt\": \"x\"}', 'queued', 1, 0, 0)")
    conn.commit()
    conn.close()
    store = JobStore(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get("old1").plan == ""
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    JobStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer Wan Studio"):
        JobStore(path)


def test_damaged_file_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    garbage = b"this is not a database at all" * 100
    path.write_bytes(garbage)
    with pytest.raises(DamagedStore, match="cannot be read"):
        JobStore(path)
    assert path.read_bytes() == garbage  # jobs.state.open_store moves it aside


def test_an_empty_file_is_damaged_not_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"")
    with pytest.raises(DamagedStore, match="empty"):
        JobStore(path)


def test_a_stored_row_with_bad_text_or_json_still_lists(store: JobStore) -> None:
    good, bad = store.add(_new(2))
    with store._tx() as c:  # what an older version or a hand edit could leave: bad JSON, bad UTF-8
        c.execute("UPDATE jobs SET request = ?, outputs = 'not json', error = CAST(? AS TEXT) WHERE id = ?",
                  ('{"prompt": "a fox \\ud800", "model": "demo"}', b"bad \xed\xa0\x80 text", bad.id))
    listed = {j.id: j for j in store.list()}
    assert listed[good.id].request == good.request
    assert listed[bad.id].request["prompt"] == "a fox \ufffd" and listed[bad.id].outputs == []
    assert listed[bad.id].error.startswith("bad ") and listed[bad.id].error.endswith(" text")
    json.dumps([j.to_dict() for j in listed.values()]).encode("utf-8")  # encodes for any response


def test_truncated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    s = JobStore(path)
    s.add(_new(50))
    s.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\x00" * (len(data) - 100))  # header kept, pages wiped
    with pytest.raises(DamagedStore):
        JobStore(path)


def test_second_app_on_same_db_is_refused(tmp_path: Path) -> None:
    first = AppLock(tmp_path / "jobs.db")
    first.acquire()
    with pytest.raises(StoreError, match="already using"):
        AppLock(tmp_path / "jobs.db").acquire()
    first.release()
    again = AppLock(tmp_path / "jobs.db")
    again.acquire()
    again.release()


def test_delete_refuses_running(store: JobStore) -> None:
    a, b = store.add(_new(2))
    store.transition(a.id, "running")
    with pytest.raises(IllegalTransition, match="cancel it first"):
        store.delete(a.id)
    store.delete(b.id)
    assert [j.id for j in store.list()] == [a.id]
