"""Local executor: one supervised worker process per GPU (or one CPU worker without CUDA).

A supervisor thread per worker reads its events and watches the process. When the process dies
(segfault, CUDA fault, OOM kill, ``kill -9``) the job it held is reported ``lost`` and the worker is
started again after a backoff that grows with repeated crashes, so a broken GPU cannot spin.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wan_studio.engine.request import GenerationRequest

from wan_studio.cluster.executor import (EventSink, Executor, Freed, JobEvent, WorkerGone, WorkerInfo,
                                         WorkerState, event_from_message)
from wan_studio.cluster.devices import detect_devices, start_with_env, worker_environment
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.cluster.worker import worker_main

log = logging.getLogger(__name__)

# Seconds to wait before restart number 1, 2, 3, ...; the last value repeats.
BACKOFF_S: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A worker that stayed up this long (seconds) starts the backoff over on its next crash.
STABLE_AFTER_S = 60.0


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Worker:
    """Supervisor-side state of one worker process."""

    name: str
    device: str
    state: WorkerState = "starting"
    process: BaseProcess | None = None
    conn: Connection | None = None
    job_id: str | None = None
    # Seconds from its start to its "ready", and the worker's own split of them (``worker._startup_times``).
    ready_after_s: float | None = None
    startup: dict[str, float] | None = None
    prepared_after_s: float | None = None
    # What this process was told to prepare at start (``RuntimeConfig.prepare``).
    prepare: dict[str, Any] | None = None
    # Jobs whose GPU part ended ("free") and whose mp4 the worker is still writing.
    writing: set[str] = field(default_factory=set)
    loaded: tuple[str, ...] = ()
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = 0.0
    last_exit: str | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> WorkerInfo:
        pid = self.process.pid if self.process is not None else None
        return WorkerInfo(self.name, self.device, self.state, pid, self.job_id, self.loaded,
                          self.restarts, self.last_exit)


class LocalExecutor(Executor):
    """Worker processes on this machine. ``devices`` defaults to every GPU (or one CPU worker)."""

    def __init__(self, config: RuntimeConfig, devices: list[str] | None = None,
                 backoff_s: tuple[float, ...] = BACKOFF_S) -> None:
        self._devices = devices if devices is not None else detect_devices()
        cpu_workers = self._devices.count("cpu")
        # CPU workers share the cores (the RAM budget's share is the config's: ``ram_share``).
        self._config = dataclasses.replace(
            config, cpu_threads=max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else None)
        self._backoff = backoff_s
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._workers = [_Worker(f"worker-{i}", d) for i, d in enumerate(self._devices)]
        self._sink: EventSink | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ticket = 0  # unload requests: ticket -> (answered, the worker's report)
        self._answers: dict[int, tuple[threading.Event, dict[str, Any]]] = {}

    # --- Executor interface --------------------------------------------------------------------
    def start(self, on_event: EventSink) -> None:
        """Start every worker and its supervisor thread (unless ``launch`` did already); from now
        on their events go to ``on_event``."""
        self._sink = on_event
        self.launch()

    def launch(self) -> LocalExecutor:
        """Start the worker processes now, before a queue takes their events (``start``): a worker
        imports torch and its libraries and prepares its model meanwhile, while the app still
        imports its own. Nothing is sent to a worker before ``start``. Returns itself."""
        with self._lock:
            if self._threads:
                return self
            for w in self._workers:
                t = threading.Thread(target=self._supervise, args=(w,), name=f"supervise-{w.name}", daemon=True)
                self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def set_prepare(self, want: dict[str, Any] | None) -> None:
        """Have every worker load and place ``want`` (``RuntimeConfig.prepare``) in the background:
        a worker started already is told now, a worker started later (a restart) has it in its
        configuration."""
        with self._lock:
            self._config = dataclasses.replace(self._config, prepare=want)
            running = [w for w in self._workers if w.conn is not None and w.prepare != want]
        for w in running:
            w.prepare = want
            try:
                self._send(w, {"op": "prepare", "want": want})
            except (OSError, ValueError):  # it died meanwhile; its restart reads the configuration
                pass

    def idle_workers(self) -> list[WorkerInfo]:
        """Workers that finished starting and hold no job."""
        with self._lock:
            return [w.info() for w in self._workers if w.state == "idle"]

    def submit(self, worker: str, job_id: str, request: GenerationRequest,
               extra: dict[str, Any] | None = None) -> None:
        """Send the job to ``worker``; raises ``WorkerGone`` if it is not idle and alive."""
        with self._lock:
            w = next((w for w in self._workers if w.name == worker), None)
            if w is None or w.state != "idle" or w.conn is None:
                raise WorkerGone(f"{worker} cannot take a job now")
            w.state, w.job_id = "busy", job_id
        try:
            # The transport edge: the request crosses the pipe as its plain dict.
            self._send(w, {"op": "run", "job_id": job_id, "request": request.to_dict(), "extra": extra or {}})
        except (OSError, ValueError) as e:
            # The supervisor will see the death and report the job lost; do not report it twice.
            raise WorkerGone(f"{worker} stopped before taking the job: {e}") from None

    def cancel(self, job_id: str) -> bool:
        """Forward a cancel to the worker that holds ``job_id``."""
        with self._lock:
            w = next((w for w in self._workers if w.job_id == job_id), None)
        if w is None:
            return False
        try:
            self._send(w, {"op": "cancel", "job_id": job_id})
        except (OSError, ValueError):
            return False
        return True

    def workers(self) -> list[WorkerInfo]:
        """Every worker, in device order."""
        with self._lock:
            return [w.info() for w in self._workers]

    def unload(self, timeout_s: float = 30.0) -> list[Freed]:
        """Ask every running worker process to free the models no job uses, and wait for the answers."""
        asked: list[tuple[_Worker, int, threading.Event]] = []
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.state not in ("idle", "busy"):
                continue
            with self._lock:
                self._ticket += 1
                ticket, answered = self._ticket, threading.Event()
                self._answers[ticket] = (answered, {})
            try:
                self._send(w, {"op": "unload", "ticket": ticket})
            except (OSError, ValueError):
                continue
            asked.append((w, ticket, answered))
        freed = []
        deadline = time.monotonic() + timeout_s
        for w in workers:
            mine = next(((t, e) for x, t, e in asked if x is w), None)
            if mine is None:
                freed.append(Freed(w.name, w.device, error=f"not running ({w.state}); it holds nothing"))
                continue
            ticket, answered = mine
            ok = answered.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                report = self._answers.pop(ticket)[1]
            freed.append(Freed.from_report(w.name, w.device, report) if ok
                         else Freed(w.name, w.device, error=f"did not answer within {timeout_s:.0f} s"))
        return freed

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Ask each worker to stop after its job, then kill what is left after ``timeout_s``."""
        self._stopping.set()
        for w in self._workers:
            try:
                if w.conn is not None:
                    self._send(w, {"op": "stop"})
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout_s
        for w in self._workers:
            if w.process is not None:
                w.process.join(max(0.0, deadline - time.monotonic()))
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(2.0)
            w.state = "stopped"
        for t in self._threads:
            t.join(2.0)

    # --- supervision ---------------------------------------------------------------------------
    def _send(self, w: _Worker, msg: dict[str, Any]) -> None:
        with w.send_lock:
            if w.conn is None:
                raise OSError("worker connection closed")
            w.conn.send(msg)

    def _spawn(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        # under the lock: a ``set_prepare`` either is in this configuration or finds the connection
        with self._lock:
            config = self._config
            proc = self._ctx.Process(target=worker_main, args=(w.name, w.device, config, child),
                                     name=f"wan-studio-{w.name}", daemon=True)
            start_with_env(proc, worker_environment(w.device))
            child.close()  # only the worker holds its end, so its death reads as EOF here
            w.process, w.conn, w.state, w.started_at = proc, parent, "starting", time.monotonic()
            w.prepare = config.prepare

    def _supervise(self, w: _Worker) -> None:
        while not self._stopping.is_set():
            try:
                self._spawn(w)
            except Exception as e:  # noqa: BLE001 - keep supervising; the backoff stops a spin
                log.exception("could not start %s", w.name)
                w.last_exit = f"could not start: {e}"
                self._stopping.wait(self._backoff[-1])
                continue
            self._pump(w)
            if self._stopping.is_set():
                break
            self._after_death(w)

    def _pump(self, w: _Worker) -> None:
        """Forward events until the worker's connection closes (it died or stopped)."""
        assert w.conn is not None
        while True:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                return
            self._handle(w, msg)

    def _handle(self, w: _Worker, msg: dict[str, Any]) -> None:
        ev = msg["ev"]
        if ev == "ready":
            with self._lock:
                w.state = "idle" if w.job_id is None else w.state
                w.ready_after_s = round(time.monotonic() - w.started_at, 2)
                w.startup = msg.get("startup")
            log.info("%s on %s ready %.1f s after its start (%s)", w.name, w.device, w.ready_after_s,
                     ", ".join(f"{k[:-2]} {v} s" for k, v in (w.startup or {}).items()))
            self._emit_wakeup()
            return
        if "loaded" in msg:
            w.loaded = tuple(msg["loaded"])
        if ev == "unloaded":
            with self._lock:
                answer = self._answers.get(msg["ticket"])
            if answer is not None:
                answer[1].update(msg["report"])
                answer[0].set()
            return
        if ev == "prepared":
            w.prepared_after_s = round(time.monotonic() - w.started_at, 2)
            log.info("%s: %s (%.1f s after its start)", w.name, msg.get("note"), w.prepared_after_s)
            self._emit_wakeup()  # the dispatcher now sees the model loaded there
            return
        if ev == "free":
            # The job's decode ended; its mp4 is written in the background. The worker takes the
            # next job now; this one stays its until the terminal message (or its death).
            with self._lock:
                if w.job_id == msg["job_id"]:
                    w.job_id, w.state = None, "idle"
                    w.writing.add(msg["job_id"])
            self._emit_wakeup()
            return
        event = event_from_message(msg, w.name)
        if ev in ("done", "failed", "cancelled"):
            with self._lock:
                if w.job_id == msg.get("job_id"):
                    w.job_id, w.state = None, "idle"
                w.writing.discard(msg.get("job_id", ""))
            w.crashes_in_a_row = 0
        if self._sink is not None:
            self._sink(event)

    def _emit_wakeup(self) -> None:
        if self._sink is not None:
            self._sink(JobEvent(kind="ready", job_id="", worker=""))

    def _after_death(self, w: _Worker) -> None:
        assert w.process is not None
        w.process.join(5.0)
        code = w.process.exitcode
        uptime = time.monotonic() - w.started_at
        with self._lock:
            # The job it ran and those whose mp4 it was still writing are all lost.
            held = sorted(w.writing) + ([w.job_id] if w.job_id is not None else [])
            w.job_id, w.writing = None, set()
            w.state, w.last_exit, w.conn = "restarting", _exit_text(code), None
        if self._sink is not None:
            for job_id in held:
                self._sink(JobEvent(kind="lost", job_id=job_id, worker=w.name,
                                    error=f"the worker process {_exit_text(code)}"))
        w.crashes_in_a_row = 1 if uptime >= STABLE_AFTER_S else w.crashes_in_a_row + 1
        delay = self._backoff[min(w.crashes_in_a_row, len(self._backoff)) - 1]
        w.restarts += 1
        self._stopping.wait(delay)


def worker_devices(settings: Any) -> list[str]:
    """Devices to start workers on: every GPU by default, or ``settings.workers`` of them."""
    found = detect_devices()
    if settings.workers is None:
        return found
    if found == ["cpu"]:
        return ["cpu"] * settings.workers
    return found[: settings.workers]


def launch_workers(settings: Any) -> LocalExecutor | None:
    """The app's local worker processes for ``settings`` (a ``wan_studio.settings.Settings``),
    started now (``LocalExecutor.launch``), for ``Studio.create(settings, workers=...)`` to adopt;
    None when the jobs run on a Ray cluster. ``app.py`` calls this before it imports torch, Gradio
    and the services, so a worker's own imports and its preparation of the default model run
    beside the app's start instead of after it. This module imports none of them."""
    if settings.ray_address:
        return None
    devices = worker_devices(settings)
    # Every local worker process holds its own models: they share this machine's RAM budget.
    return LocalExecutor(RuntimeConfig.from_settings(settings, ram_share=len(devices)), devices).launch()
