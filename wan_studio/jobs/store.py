"""Persistent job records in SQLite (WAL): one row per job, numbered migrations, one transition function.

The store is the only module that speaks SQL. Every status change goes through ``transition``, which
refuses moves the state machine does not allow (nothing ever leaves ``done``). ``sweep`` runs once at
start-up and puts jobs that a dead process left ``running`` back in the queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from wan_studio.engine.request import RequestError
from wan_studio.engine.text import clean_text
from wan_studio.jobs import journal
from wan_studio.jobs.lock import AppLock
from wan_studio.jobs.transaction import Transaction
from wan_studio.jobs.schema import (ACTIVE, ALLOWED, FINISHED, MIGRATIONS, SQL_COUNT_ACTIVE, SQL_INSERT,
                                    SQL_DONE_WITH_OUTPUT, SQL_INSERT_DONE, SQL_MAX_POSITION,
                                    SQL_NEXT_QUEUED, SQL_QUEUED_ORDER, SQL_RUNNING, STATUSES,
                                    DamagedStore, JobStatus, StoreError, StoreUnwritable)

__all__ = ["ACTIVE", "ALLOWED", "FINISHED", "MIGRATIONS", "STATUSES", "JobStatus", "Job", "NewJob", "JobStore",
           "AppLock", "RestoredJob", "StoreError", "DamagedStore", "StoreUnwritable", "IllegalTransition", "QueueFull", "JobNotFound"]


class IllegalTransition(ValueError):
    """A status change the state machine forbids, e.g. anything out of ``done``."""


class QueueFull(RequestError):
    """The queue already holds its maximum number of unfinished jobs."""


class JobNotFound(KeyError):
    """No job has this id (it may have been deleted)."""


@dataclass
class Job:
    """One job row. Times are Unix seconds; ``progress`` is 0..1; ``eta_s`` seconds left."""

    id: str
    request: dict[str, Any]
    status: JobStatus
    priority: int
    position: float
    progress: float
    progress_text: str
    eta_s: float | None
    attempts: int
    max_attempts: int
    owner: str
    batch_id: str | None
    worker: str | None
    cancel_requested: bool
    error: str | None
    outputs: list[str]
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    plan: str = ""
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the job can no longer change by itself (done, failed or cancelled)."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for the API."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class NewJob:
    """What ``JobStore.add`` needs to create a row; ``request`` is a resolved request dict."""

    request: dict[str, Any]
    owner: str = ""
    priority: int = 0
    batch_id: str | None = None
    max_attempts: int = 3
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoredJob:
    """A finished job read back from its sidecar: ``outputs`` are the mp4 and sidecar paths,
    ``finished_at`` Unix seconds (the sidecar's mtime)."""

    id: str
    request: dict[str, Any]
    outputs: list[str]
    finished_at: float
    user: str | None = None
    owner: str = ""


def _loads(text: Any, default: Any) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _row_to_job(row: sqlite3.Row) -> Job:
    # A row written by an older version (or by hand) must never break listing for everyone: bad
    # JSON reads as empty, and text that cannot be encoded is shown with U+FFFD in its place.
    d = clean_text(dict(row))
    d["request"] = clean_text(_loads(d["request"], {}))
    d["outputs"] = [str(o) for o in clean_text(_loads(d["outputs"], []))]
    d["extra"] = clean_text(_loads(d["extra"], {}))
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


class JobStore:
    """SQLite job table at ``path``; safe to share between the threads of one process.

    Opening checks the file: an empty, truncated, foreign or unreadable one raises ``DamagedStore``
    and is left exactly as it is (``jobs.state.open_store`` moves it aside and starts afresh).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open_checked()
        self._migrate()

    # --- opening -------------------------------------------------------------------------------
    def _open_checked(self) -> sqlite3.Connection:
        existed = self.path.exists()
        conn: sqlite3.Connection | None = None
        try:
            if existed and self.path.stat().st_size == 0:
                # SQLite would take an empty file for a new database and start a silent, empty queue.
                raise sqlite3.DatabaseError("the file is empty (0 bytes)")
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            conn.row_factory = sqlite3.Row
            # Text that is not UTF-8 (a hand edit, a torn page) reads with U+FFFD instead of failing
            # every query that touches its row.
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            # An unreadable or foreign file fails on the first statement that touches the pages.
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives an application crash (only an OS crash can lose the last
            # commits), and keeps a submission to about a millisecond.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        except (sqlite3.DatabaseError, OSError) as e:
            if conn is not None:
                conn.close()
            if not existed:
                raise StoreError(f"cannot create the job database {self.path}: {e}; check that the folder "
                                 "is writable") from None
            # The file is left exactly as it is; ``jobs.state.open_store`` moves it aside.
            raise DamagedStore(f"the job database {self.path} cannot be read ({e})") from None

    def _migrate(self) -> None:
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"The job database {self.path} was written by a newer Wan Studio (schema {version}, "
                    f"this version knows {len(MIGRATIONS)}); update Wan Studio or move the file away."
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for stmt in _statements(MIGRATIONS[number - 1]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        """The migration number the file is at."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # --- plumbing ------------------------------------------------------------------------------
    def _tx(self) -> Transaction:
        return Transaction(self._conn, self._lock, self.path.parent)

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._conn.close()

    # --- reads ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        """The job ``job_id``; raises ``JobNotFound``."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return _row_to_job(row)

    def list(self, statuses: tuple[str, ...] | None = None, limit: int = 500, newest_first: bool = False) -> list[Job]:
        """Jobs in queue order (active ones by dispatch order first), at most ``limit``."""
        where = f"WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        order = ("created_at DESC" if newest_first else
                 "CASE status WHEN 'running' THEN 0 WHEN 'queued' THEN 1 WHEN 'paused' THEN 2 ELSE 3 END, "
                 "CASE WHEN status IN ('queued','paused') THEN -priority ELSE 0 END, "
                 "CASE WHEN status IN ('queued','paused') THEN position ELSE -COALESCE(finished_at, updated_at) END")
        with self._lock:
            rows = self._conn.execute(f"SELECT * FROM jobs {where} ORDER BY {order} LIMIT ?",
                                      (*(statuses or ()), limit)).fetchall()
        return [_row_to_job(r) for r in rows]

    def count_active(self, user: str | None = None) -> int:
        """Jobs queued, running or paused (of ``user`` only, when given)."""
        with self._lock:
            if user is None:
                return int(self._conn.execute(SQL_COUNT_ACTIVE).fetchone()[0])
            return int(self._conn.execute(SQL_COUNT_ACTIVE + " AND user = ?", (user,)).fetchone()[0])

    def queued_ahead(self, job_id: str) -> int:
        """How many queued jobs will be dispatched before ``job_id`` (0 when it is next)."""
        order = [j.id for j in self.queued_in_order()]
        return order.index(job_id) if job_id in order else 0

    def queued_in_order(self) -> list[Job]:
        """Queued jobs in the order the dispatcher takes them."""
        with self._lock:
            return [_row_to_job(r) for r in self._conn.execute(SQL_QUEUED_ORDER).fetchall()]

    def next_queued(self) -> Job | None:
        """The job the dispatcher should run next, or None."""
        with self._lock:
            row = self._conn.execute(SQL_NEXT_QUEUED).fetchone()
        return _row_to_job(row) if row else None

    def done_with_output(self, name: str) -> list[Job]:
        """Finished jobs whose outputs include a file called ``name`` (the caller compares paths)."""
        needle = json.dumps(name)[1:-1]  # as the outputs column spells it
        with self._lock:
            rows = self._conn.execute(SQL_DONE_WITH_OUTPUT, (needle,)).fetchall()
        return [_row_to_job(r) for r in rows]

    # --- writes --------------------------------------------------------------------------------
    def add(self, jobs: list[NewJob], max_active: int | None = None) -> list[Job]:
        """Insert ``jobs`` as ``queued`` in one transaction; all or none.

        Raises ``QueueFull`` when ``max_active`` would be exceeded (checked inside the same
        transaction, so concurrent submitters cannot overshoot it).
        """
        now = time.time()
        with self._tx() as c:
            if max_active is not None:
                active = c.execute(SQL_COUNT_ACTIVE).fetchone()[0]
                if active + len(jobs) > max_active:
                    raise QueueFull(
                        f"the queue is full ({active} unfinished jobs, limit {max_active}); wait for some "
                        f"to finish or cancel a few, then submit again"
                        + (f" ({len(jobs)} jobs were in this submission)" if len(jobs) > 1 else "")
                    )
            position = c.execute(SQL_MAX_POSITION).fetchone()[0]
            for j in jobs:
                position += 1
                c.execute(
                    SQL_INSERT,
                    (j.id, json.dumps(j.request), j.priority, position, j.max_attempts, j.owner,
                     j.batch_id, now, now, j.user, json.dumps(j.extra)),
                )
        added = [self.get(j.id) for j in jobs]
        for job in added:
            journal.queued(job)
        return added

    def restore_done(self, jobs: list[RestoredJob]) -> int:
        """Insert finished jobs rebuilt from their sidecars; returns how many were new."""
        with self._tx() as c:
            before = c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            for j in jobs:
                c.execute(SQL_INSERT_DONE, (j.id, json.dumps(j.request), j.owner, json.dumps(j.outputs),
                                            j.finished_at, j.finished_at, j.finished_at, j.user))
            return int(c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] - before)

    def transition(self, job_id: str, to: JobStatus, expect: tuple[str, ...] | None = None, **fields: Any) -> Job:
        """Move ``job_id`` to status ``to`` and set ``fields``, or raise ``IllegalTransition``.

        ``expect`` narrows the allowed starting statuses further (e.g. only from ``running``).
        Entering ``running`` counts an attempt; entering ``queued`` clears progress and worker.
        """
        if to not in STATUSES:
            raise IllegalTransition(f"unknown status {to!r}")
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            current = row[0]
            if to not in ALLOWED[current] or (expect is not None and current not in expect):
                raise IllegalTransition(f"job {job_id} is {current}; it cannot become {to}")
            values: dict[str, Any] = {"status": to, "updated_at": now, **fields}
            if to == "running":
                c.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
                values.setdefault("started_at", now)
                values.setdefault("cancel_requested", 0)
            elif to == "queued":
                values.update(progress=0.0, progress_text="", eta_s=None, worker=None, finished_at=None)
            elif to in FINISHED:
                values.setdefault("finished_at", now)
            self._update(c, job_id, values)
        job = self.get(job_id)
        journal.changed(current, job)
        return job

    def update(self, job_id: str, when_status: tuple[str, ...] = ("running",), **fields: Any) -> bool:
        """Set non-status ``fields`` (progress, plan, ...) if the job is in ``when_status``.

        Returns False when the job moved on meanwhile (a late progress report is then dropped).
        """
        if "status" in fields:
            raise IllegalTransition("use transition() to change a status")
        fields["updated_at"] = time.time()
        with self._tx() as c:
            row = c.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in when_status:
                return False
            self._update(c, job_id, fields)
            return True

    @staticmethod
    def _update(c: Transaction, job_id: str, values: dict[str, Any]) -> None:
        for k, v in list(values.items()):
            if k not in Job.__dataclass_fields__ or k == "id":
                raise ValueError(f"unknown job field {k!r}")
            if k in ("outputs", "request", "extra"):
                values[k] = json.dumps(v)
            elif isinstance(v, bool):
                values[k] = int(v)
        sets = ", ".join(f"{k} = ?" for k in values)
        c.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))

    def set_order(self, job_id: str, priority: int, position: float) -> Job:
        """Place a queued or paused job at ``priority``/``position`` in the dispatch order."""
        self.update(job_id, when_status=("queued", "paused"), priority=priority, position=position)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Remove a job that is not running; raises ``IllegalTransition`` for a running one."""
        with self._tx() as c:
            row = c.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            if row[0] == "running":
                raise IllegalTransition(f"job {job_id} is running; cancel it first, then delete it")
            c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def sweep(self) -> list[Job]:
        """Start-up repair: every ``running`` row belongs to a process that is gone (the caller holds
        the database's single-app lock). Requeue each, or fail it once it used all its attempts.

        Returns the jobs as they are after the sweep.
        """
        with self._lock:
            running = [_row_to_job(r) for r in self._conn.execute(SQL_RUNNING).fetchall()]
        swept = []
        for job in running:
            if job.cancel_requested:
                swept.append(self.transition(job.id, "cancelled", error="cancelled while the app was stopped"))
            elif job.attempts >= job.max_attempts:
                swept.append(self.transition(
                    job.id, "failed",
                    error=f"the app stopped while running this job {job.attempts} times; giving up"))
            else:
                swept.append(self.transition(
                    job.id, "queued", error=f"requeued after the app stopped during attempt {job.attempts}"))
        return swept


def _statements(script: str) -> Iterator[str]:
    for stmt in script.split(";"):
        if stmt.strip():
            yield stmt.strip()
