"""One SQLite write transaction of the job store, with a full disk said in words."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from wan_studio.engine.disk import disk_full_text
from wan_studio.jobs.schema import StoreUnwritable


class Transaction:
    """``with store._tx() as c:`` — BEGIN IMMEDIATE ... COMMIT under the store's thread lock.

    A write refused for lack of space raises ``StoreUnwritable`` with the free space in words, so a
    caller can tell the user and try again once space returns.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, folder: Path) -> None:
        self._conn = conn
        self._lock = lock
        self._folder = folder

    def __enter__(self) -> Transaction:
        self._lock.acquire()
        try:
            self._run("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run one statement inside the transaction."""
        return self._run(sql, params)

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.OperationalError as e:
            if "full" in str(e) or "disk I/O" in str(e):
                raise StoreUnwritable(f"{disk_full_text(self._folder)}; the job list cannot be updated "
                                      "until space is freed") from None
            raise

    def __exit__(self, exc_type: type | None, *_: Any) -> None:
        try:
            if exc_type:
                # A statement that met a full disk has already rolled the transaction back; a
                # second ROLLBACK would fail and hide the StoreUnwritable being raised.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            else:
                self._run("COMMIT")
        except StoreUnwritable:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass  # SQLite already rolled back the failed commit
            raise
        finally:
            self._lock.release()
