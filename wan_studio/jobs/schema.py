"""The job table's schema: statuses, the state machine, numbered migrations and the SQL the store runs.

Kept apart from ``store.py`` so the SQL can be read (and tested) on its own.
"""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal["queued", "running", "paused", "done", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(JobStatus)
ACTIVE: tuple[JobStatus, ...] = ("queued", "running", "paused")
FINISHED: tuple[JobStatus, ...] = ("done", "failed", "cancelled")

# The state machine. ``running -> queued`` is the requeue after a lost worker; ``failed/cancelled ->
# queued`` is a user retry. ``done`` has no way out: a finished video is never re-run in place.
ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "paused", "cancelled"}),
    "paused": frozenset({"queued", "cancelled"}),
    "running": frozenset({"queued", "done", "failed", "cancelled"}),
    "failed": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
    "done": frozenset(),
}

_STATUS_SQL = ", ".join(f"'{s}'" for s in STATUSES)
MIGRATIONS: tuple[str, ...] = (
    # 1: the job table and the index the dispatcher reads in order.
    f"""
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        request TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ({_STATUS_SQL})),
        priority INTEGER NOT NULL DEFAULT 0,
        position REAL NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        progress_text TEXT NOT NULL DEFAULT '',
        eta_s REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        owner TEXT NOT NULL DEFAULT '',
        batch_id TEXT,
        worker TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        outputs TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_dispatch ON jobs (status, priority DESC, position);
    """,
    # 2: what the worker reported about how it ran the job (placement / memory plan).
    "ALTER TABLE jobs ADD COLUMN plan TEXT NOT NULL DEFAULT '';",
    # 3: the logged-in user (for per-user quotas) and sidecar additions made at submission.
    "ALTER TABLE jobs ADD COLUMN user TEXT; ALTER TABLE jobs ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';",
)

SQL_NEXT_QUEUED = "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, position ASC LIMIT 1"
SQL_QUEUED_ORDER = "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, position ASC"
SQL_COUNT_ACTIVE = "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running', 'paused')"
SQL_MAX_POSITION = "SELECT COALESCE(MAX(position), 0) FROM jobs"
SQL_INSERT = ("INSERT INTO jobs (id, request, status, priority, position, attempts, max_attempts, owner, batch_id,"
              " created_at, updated_at, user, extra) VALUES (?, ?, 'queued', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)")
SQL_RUNNING = "SELECT * FROM jobs WHERE status = 'running'"
# A finished job rebuilt from its sidecar after the database was lost (an id already present wins).
SQL_INSERT_DONE = ("INSERT OR IGNORE INTO jobs (id, request, status, priority, position, progress, progress_text,"
                   " attempts, max_attempts, owner, outputs, created_at, updated_at, finished_at, user, extra)"
                   " VALUES (?, ?, 'done', 0, 0, 1.0, 'done', 1, 1, ?, ?, ?, ?, ?, ?, '{}')")
SQL_DONE_WITH_OUTPUT = "SELECT * FROM jobs WHERE status = 'done' AND instr(outputs, ?) > 0"


class StoreError(RuntimeError):
    """The job database cannot be used; the message says why and what to do."""


class DamagedStore(StoreError):
    """The job database exists but cannot be read (empty, truncated, not SQLite, unreadable)."""


class StoreUnwritable(StoreError):
    """A write to the job database failed because its disk is full; the message says how full."""
