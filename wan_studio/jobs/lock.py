"""One app per job database: an exclusive ``flock`` on ``<db>.lock``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wan_studio.jobs.schema import StoreError


class AppLock:
    """An exclusive lock on ``<db>.lock`` so that one app at a time owns a job database.

    The kernel drops the lock when the holder dies (even by ``kill -9``), which is what lets the
    start-up sweep treat every ``running`` row as orphaned. Where ``fcntl`` is missing (Windows)
    the lock is skipped and the sweep relies on the user running one app per outputs folder.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = Path(str(db_path) + ".lock")
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreError`` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise StoreError(
                f"Another Wan Studio ({holder}) is already using {self.path.parent}; stop it first or "
                f"start this one with a different --outputs-dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f

    def release(self) -> None:
        """Give the lock back (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
