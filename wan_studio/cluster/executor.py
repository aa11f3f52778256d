"""The Executor interface between the job queue and the places jobs run.

The queue decides *what* runs next; an executor decides *where* and reports back through events.
The local executor (``local.py``) runs one supervised worker process per GPU; a Ray executor can
implement the same interface for workers on other machines. Backends are imported only when chosen.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from wan_studio.engine.request import GenerationRequest

EventKind = Literal["ready", "started", "progress", "done", "failed", "cancelled", "lost"]
WorkerState = Literal["starting", "idle", "busy", "restarting", "stopped"]


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job on a worker.

    ``lost`` means the worker died while holding the job; the queue decides whether to requeue it.
    ``ready`` (with an empty ``job_id``) says a worker became able to take a job.
    ``progress`` is 0..1, ``eta_s`` seconds left, ``at`` Unix seconds on the worker's clock.
    """

    kind: EventKind
    job_id: str
    worker: str
    at: float = field(default_factory=time.time)
    progress: dict[str, Any] | None = None
    outputs: tuple[str, ...] = ()
    error: str | None = None
    plan: str = ""


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as the UI shows it. ``restarts`` counts automatic restarts since the app started."""

    name: str
    device: str
    state: WorkerState
    pid: int | None
    job_id: str | None
    loaded: tuple[str, ...]
    restarts: int
    last_exit: str | None = None


@dataclass(frozen=True)
class Freed:
    """What ``Executor.unload`` freed on one worker: model keys dropped, components and GiB of cached
    weights freed, models kept because a job uses them, or ``error`` when the worker could not answer."""

    worker: str
    device: str
    models: tuple[str, ...] = ()
    components: int = 0
    freed_gib: float = 0.0
    kept: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def from_report(cls, worker: str, device: str, report: dict[str, Any]) -> Freed:
        """From a runtime's ``unload`` report (see ``WorkerRuntime.unload``)."""
        return cls(worker, device, tuple(report["models"]), int(report["components"]), float(report["freed_gib"]),
                   tuple(report["kept"]))

    def describe(self) -> str:
        """One line for the UI, e.g. ``worker-0 (cuda:0): freed ti2v-5b, 9.8 GiB``."""
        head = f"{self.worker} ({self.device})"
        if self.error is not None:
            return f"{head}: {self.error}"
        text = f"freed {', '.join(self.models)}, {self.freed_gib:.1f} GiB" if self.components else "nothing to free"
        return f"{head}: {text}" + (f"; in use, kept: {', '.join(self.kept)}" if self.kept else "")


EventSink = Callable[[JobEvent], None]


class WorkerGone(RuntimeError):
    """The chosen worker is not able to take a job any more (it died or is restarting)."""


class Executor(abc.ABC):
    """Runs jobs somewhere and reports what happens to them.

    Contract: ``submit`` hands a job to a worker returned by ``idle_workers`` (one job on a
    worker's GPU at a time; a local worker is idle again once a job's decode ends, while its mp4 is
    written in the background); from then on exactly one terminal event (``done``, ``failed``,
    ``cancelled`` or ``lost``) arrives for it through the sink given to ``start``.
    """

    @abc.abstractmethod
    def start(self, on_event: EventSink) -> None:
        """Start the workers; events for every job go to ``on_event`` (called from any thread)."""

    @abc.abstractmethod
    def idle_workers(self) -> list[WorkerInfo]:
        """Workers ready to take a job right now."""

    @abc.abstractmethod
    def submit(self, worker: str, job_id: str, request: GenerationRequest,
               extra: dict[str, Any] | None = None) -> None:
        """Run the validated, resolved ``request`` on ``worker``; raises ``WorkerGone`` if it cannot.
        The request stays a typed object up to the transport (a pipe, a Ray call), which serialises it.

        ``extra`` is added to the job's JSON sidecar (e.g. VRAM warnings made at submission).
        """

    @abc.abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Ask the worker holding ``job_id`` to stop after its current step; True if one holds it."""

    @abc.abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Every worker and what it is doing."""

    @abc.abstractmethod
    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop every worker, waiting up to ``timeout_s`` seconds each before killing it."""

    def telemetry(self) -> dict[str, Any]:
        """Executor-specific numbers for the UI (empty by default)."""
        return {}

    def unload(self, timeout_s: float = 30.0) -> list[Freed]:
        """Ask every worker to free the models no job uses; what each freed (one ``Freed`` per worker,
        waiting up to ``timeout_s`` seconds for each). An executor whose workers hold no models frees
        nothing."""
        return [Freed(w.name, w.device, error="holds no models it can free") for w in self.workers()]

    def loaded(self) -> dict[str, tuple[str, ...]]:
        """What is loaded where: worker name -> model keys it holds."""
        return {w.name: w.loaded for w in self.workers()}


def event_from_message(msg: dict[str, Any], worker: str) -> JobEvent:
    """The ``JobEvent`` for one message of a worker runtime (see ``cluster/runtime.py``)."""
    return JobEvent(kind=msg["ev"], job_id=msg.get("job_id", ""), worker=worker, at=msg.get("at", time.time()),
                    progress=msg.get("progress"), outputs=tuple(msg.get("outputs", ())),
                    error=msg.get("error"), plan=msg.get("plan", ""))


def make_executor(kind: str, **options: Any) -> Executor:
    """Build the executor named ``kind`` ("local" or "ray"); backends are imported only here."""
    if kind == "local":
        from wan_studio.cluster.local import LocalExecutor

        return LocalExecutor(**options)
    if kind == "ray":
        from wan_studio.cluster.ray_backend import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
