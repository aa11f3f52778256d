"""Removes what a killed worker leaves half-written in the outputs folder.

Videos and sidecars are written to a hidden temporary file beside the target and renamed into
place (``engine.video_io``), so a worker killed mid-write leaves a ``.name.XXXX.mp4`` (or ``.json``,
``.part``) behind. Nothing references such a file; it only fills the disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# A file a live worker is writing changes at least every frame; one untouched this long, seconds,
# belongs to no running writer.
IDLE_S = 10.0
TEMP_SUFFIXES = (".mp4", ".json", ".part", ".tmp", ".wav", ".m4a")


def is_temp_file(path: Path) -> bool:
    """True for our hidden temporary outputs (``.stem.XXXX.mp4``, ``.name.part``)."""
    return path.name.startswith(".") and path.suffix in TEMP_SUFFIXES


def _files_below(root: Path) -> Iterator[Path]:
    """Every file under ``root`` but the queue's uploaded inputs. A folder removed while it is walked
    (a job's work folder, dropped when the job ends) is passed over, not an error."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".inputs"]
        for name in files:
            yield Path(folder) / name


def remove_stale_temp_files(outputs_dir: Path, idle_s: float = IDLE_S, now: float | None = None) -> list[Path]:
    """Delete temporary outputs not modified for ``idle_s`` seconds; returns what was removed.

    Uploaded inputs kept for the queue (``.inputs/``) and the job database are never touched.
    """
    now = time.time() if now is None else now
    removed = []
    for path in _files_below(Path(outputs_dir)):
        if not is_temp_file(path):
            continue
        try:
            if now - path.stat().st_mtime >= idle_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # renamed into place or removed meanwhile
    if removed:
        log.info("removed %d half-written file(s) left by a stopped worker", len(removed))
    return removed
