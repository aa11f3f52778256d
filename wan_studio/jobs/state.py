"""Opening the job database the safe way: out of the served folder, and never silently empty.

- The database, its WAL and its lock live in a state folder beside the outputs, so the web server,
  which serves the outputs folder, has no path to them. An install that kept ``jobs.db`` in the
  outputs folder has it moved on start (said in the console).
- A database that is empty, truncated, not SQLite or unreadable is moved aside (kept, never
  deleted), a fresh one is started, and the finished videos are listed again from their sidecars.
  A database that is missing while the outputs hold videos is rebuilt the same way. Each of these
  leaves a sentence in ``OpenedStore.notices`` for the console and the UI.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_studio.jobs.lock import AppLock
from wan_studio.jobs.store import DamagedStore, JobStore, RestoredJob, StoreError

log = logging.getLogger(__name__)

DB_NAME = "jobs.db"
# SQLite's companions of the database file: they must travel with it or commits are lost.
COMPANIONS = ("-wal", "-shm")


@dataclass
class OpenedStore:
    """The open store and what the user should be told about how it was opened."""

    store: JobStore
    notices: list[str] = field(default_factory=list)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def migrate_from_outputs(outputs_dir: Path, db_path: Path) -> list[str]:
    """Move a ``jobs.db`` (with WAL, and earlier damaged copies) out of ``outputs_dir`` to
    ``db_path``; returns sentences saying what moved. Raises ``StoreError`` while another app
    still holds the old database."""
    old = Path(outputs_dir) / DB_NAME
    notices = []
    if old.exists() and old.resolve() != Path(db_path).resolve():
        lock = AppLock(old)
        lock.acquire()  # an older app still running on this folder: refuse rather than move under it
        try:
            target = Path(db_path)
            if target.exists():  # both layouts present: keep the new one, park the old beside it
                target = target.with_name(f"{DB_NAME}.from-outputs-{_stamp()}")
            for suffix in ("", *COMPANIONS):
                src = old.with_name(old.name + suffix)
                if src.exists():
                    _move(src, target.with_name(target.name + suffix))
        finally:
            lock.release()
            Path(str(old) + ".lock").unlink(missing_ok=True)
        notices.append(f"The job list moved from {old} to {target}, out of the folder the app serves.")
    for backup in sorted(Path(outputs_dir).glob(f"{DB_NAME}.damaged-*")):
        _move(backup, Path(db_path).with_name(backup.name))
        notices.append(f"A damaged copy of the job list moved from {backup} to {Path(db_path).parent}.")
    return notices


def _move_aside(db_path: Path) -> Path:
    """Rename a damaged database (and its WAL) to ``jobs.db.damaged-<time>``; returns the new path."""
    backup = db_path.with_name(f"{db_path.name}.damaged-{_stamp()}")
    n = 1
    while backup.exists():
        n += 1
        backup = db_path.with_name(f"{db_path.name}.damaged-{_stamp()}-{n}")
    for suffix in ("", *COMPANIONS):
        src = db_path.with_name(db_path.name + suffix)
        if src.exists():
            os.replace(src, backup.with_name(backup.name + suffix))
    return backup


def _sidecar_job(path: Path) -> RestoredJob | None:
    """The finished job a sidecar describes, when its video is still beside it."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        video = path.with_name(str(data["video"]["file"]))
        request = data["request"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(request, dict) or not video.is_file() or video.parent != path.parent:
        return None
    job_id = str(data.get("job_id") or f"restored-{path.stem[-24:]}")
    user = data.get("user") if isinstance(data.get("user"), str) else None
    return RestoredJob(job_id, request, [str(video), str(path)], path.stat().st_mtime, user=user)


def sidecar_jobs(outputs_dir: Path) -> list[RestoredJob]:
    """Every finished video under ``outputs_dir`` with a readable sidecar (hidden folders skipped)."""
    root = Path(outputs_dir)
    found = []
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # .work, .inputs, .calibration and half-written temp files
        job = _sidecar_job(path)
        if job is not None:
            found.append(job)
    return found


def open_store(outputs_dir: Path, db_path: Path) -> OpenedStore:
    """Open (migrating, repairing) the job database at ``db_path`` for the outputs in ``outputs_dir``.

    Raises ``StoreError`` only when nothing can be done safely: another app holds the old database,
    the file is from a newer version, or a damaged file cannot even be moved.
    """
    db_path = Path(db_path)
    notices = migrate_from_outputs(outputs_dir, db_path)
    missing = not db_path.exists()
    try:
        store = JobStore(db_path)
    except DamagedStore as e:
        try:
            backup = _move_aside(db_path)
        except OSError as move_error:
            raise StoreError(f"{e}, and it could not be moved aside ({move_error.strerror or move_error}); "
                             f"move {db_path} away yourself, then start again") from None
        store = JobStore(db_path)
        restored = store.restore_done(sidecar_jobs(outputs_dir))
        notices.append(f"The job list was damaged ({str(e).rpartition('(')[2].rstrip(')')}) and was moved to "
                       f"{backup}; {restored} videos in {outputs_dir} are kept; their settings are in the "
                       "sidecars, and the Queue tab lists them again.")
        return OpenedStore(store, notices)
    if missing and not notices:
        restored = store.restore_done(sidecar_jobs(outputs_dir))
        if restored:
            notices.append(f"The job list {db_path} was missing; a new one was started. {restored} videos in "
                           f"{outputs_dir} are kept; their settings are in the sidecars, and the Queue tab "
                           "lists them again.")
    return OpenedStore(store, notices)
