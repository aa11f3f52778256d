"""A worker's background writer: mp4 encodes and sidecars run here, off the GPU's path.

A job whose frames are decoded to host memory hands its write (``engine.generate``'s
``write_later``) to this thread and the worker takes its next job at once. The job is reported
done only by the writer, after the mp4 and then the sidecar are in place (both written atomically),
so a worker killed mid-write leaves the job unfinished: its retry writes the same claimed names
again (``engine.job.claim_outputs``), never a second video. Writes run one at a time, in order; at
most ``backlog`` wait, after which a finished job waits for a free slot (its frames stay in RAM).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)


class BackgroundWriter:
    """One thread that runs the writes it is given in order (see the module docstring)."""

    def __init__(self, backlog: int = 2, name: str = "mp4-writer", before: Callable[[], None] | None = None) -> None:
        self._before = before  # runs on the thread before each write (tests hold a write there)
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max(1, backlog))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write`` (it reports its own outcome and must not raise); blocks while the
        backlog is full."""
        self._jobs.put(write)

    def close(self, timeout_s: float | None = None) -> None:
        """Finish every queued write, then stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (write := self._jobs.get()) is not None:
            try:
                if self._before is not None:
                    self._before()
                write()
            except Exception:  # noqa: BLE001 - the writer thread must outlive one bad write
                log.exception("background write failed")
