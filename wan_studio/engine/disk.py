"""Free space on the disk holding a folder, and the sentence a user reads when it runs out."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from wan_studio.engine.request import RequestError

MB = 1024 * 1024
# Refuse new jobs below this much free space, bytes: a short clip and its sidecar are a few MB, and
# SQLite needs room to record the job; below it a job would only fail later, half written.
DEFAULT_RESERVE_BYTES = 64 * MB


class DiskFull(RequestError):
    """The disk holding the outputs has less free space than a job needs."""


def free_bytes(folder: Path) -> int | None:
    """Bytes free to this user on the disk holding ``folder`` (its nearest existing parent), or
    None when that cannot be read."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_text(folder: Path) -> str:
    """``the disk holding /data/outputs is full (3.2 MB free)``."""
    free = free_bytes(folder)
    shown = "unknown space" if free is None else f"{free / MB:.1f} MB"
    return f"the disk holding {Path(folder).resolve()} is full ({shown} free)"


def check_free_space(folder: Path, reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> None:
    """Raise ``DiskFull`` with ``disk_full_text`` when less than ``reserve_bytes`` are free."""
    free = free_bytes(folder)
    if free is not None and free < reserve_bytes:
        raise DiskFull(f"{disk_full_text(folder)}; free some space (old videos in it can go), then submit again")


def is_disk_full(e: BaseException) -> bool:
    """True for the error a write gets when its disk (or quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
