"""In-process executor: one thread runs jobs on a ``WorkerRuntime`` of this process.

For tests and embedding (a ``Studio`` built with an injected manager): the same runtime, queue, store
and events as the worker processes, without their isolation. ``app.py`` never uses it — there the
web process holds no pipeline.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from wan_studio.engine.request import GenerationRequest

from wan_studio.cluster.executor import EventSink, Executor, Freed, WorkerGone, WorkerInfo, event_from_message
from wan_studio.cluster.runtime import WorkerRuntime

_STOP = object()


class InlineExecutor(Executor):
    """One worker thread running ``runtime``'s jobs one at a time."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self._runtime = runtime
        name = runtime.name
        self._name = name
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._job_id: str | None = None
        self._cancel: threading.Event | None = None
        self._sink: EventSink | None = None
        self._thread: threading.Thread | None = None

    def start(self, on_event: EventSink) -> None:
        """Start the worker thread."""
        self._sink = on_event
        self._thread = threading.Thread(target=self._loop, name=f"{self._name}-jobs", daemon=True)
        self._thread.start()

    def _forward(self, msg: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink(event_from_message(msg, self._name))

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not _STOP:
            job_id, request, extra, cancel = item
            try:
                self._runtime.run_job(job_id, request, cancel, self._forward, extra)
            finally:
                with self._lock:
                    self._job_id, self._cancel = None, None
                self._forward({"ev": "ready"})

    def idle_workers(self) -> list[WorkerInfo]:
        """This thread, when it holds no job."""
        with self._lock:
            return [] if self._job_id is not None or self._thread is None else [self._info()]

    def submit(self, worker: str, job_id: str, request: GenerationRequest,
               extra: dict[str, Any] | None = None) -> None:
        """Queue the job for the thread; raises ``WorkerGone`` if it is busy or stopped."""
        with self._lock:
            if worker != self._name or self._job_id is not None or self._thread is None:
                raise WorkerGone(f"{worker} cannot take a job now")
            self._job_id, self._cancel = job_id, threading.Event()
            self._jobs.put((job_id, request, extra, self._cancel))

    def cancel(self, job_id: str) -> bool:
        """Set the cancel event of the running job ``job_id``."""
        with self._lock:
            if self._job_id != job_id or self._cancel is None:
                return False
            self._cancel.set()
            return True

    def workers(self) -> list[WorkerInfo]:
        """The one worker thread."""
        with self._lock:
            return [self._info()]

    def unload(self, timeout_s: float = 30.0) -> list[Freed]:
        """Free the models no job of this thread uses."""
        return [Freed.from_report(self._name, "this process", self._runtime.unload())]

    def _info(self) -> WorkerInfo:
        state = "stopped" if self._thread is None else ("busy" if self._job_id else "idle")
        return WorkerInfo(self._name, "this process", state, None, self._job_id,
                          tuple(self._runtime.loaded()), 0)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel the running job and stop the thread."""
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()
        self._jobs.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None
