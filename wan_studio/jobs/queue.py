"""The job queue: submit / cancel / retry / delete / reorder, and dispatch to an executor.

Every accepted job is a row in the ``JobStore`` before ``submit`` returns, so it survives a crash
of the worker or of the whole app. A dispatcher thread hands queued jobs to idle workers in
priority order and turns executor events into store transitions.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Literal

from wan_studio.cluster.executor import Executor, JobEvent, WorkerGone, WorkerInfo
from wan_studio.engine.generate import Progress
from wan_studio.engine.job import drop_claimed_outputs, finished_earlier, work_dir_of
from wan_studio.engine.disk import DEFAULT_RESERVE_BYTES, check_free_space
from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.jobs.cleanup import IDLE_S, remove_stale_temp_files
from wan_studio.jobs.prepared import PreparedJob
from wan_studio.jobs.store import (ACTIVE, AppLock, IllegalTransition, Job, JobNotFound, JobStore, NewJob,
                                   QueueFull, StoreError)

__all__ = ["JobQueue", "QueueFull", "QueuedProgress", "Move"]

log = logging.getLogger(__name__)
Move = Literal["top", "up", "down", "bottom"]
RequestCheck = Callable[[GenerationRequest], None]


# How often an outcome the database could not record (disk full) is tried again, seconds.
STORE_RETRY_S = 2.0
# Longest a job waits for a waiting caller to take one step report, seconds.
LISTENER_TIMEOUT_S = 10.0
# Key in a job's ``extra``: jobs sharing its value stand or fall together (a scene + talk pair).
GROUP = "group"


def _drain(inbox: "queue.Queue[tuple[Progress, threading.Event]]",
           on_progress: Callable[[Progress], None] | None) -> None:
    """Hand every waiting step report to ``on_progress`` and release the job waiting on each."""
    while True:
        try:
            p, handled = inbox.get_nowait()
        except queue.Empty:
            return
        try:
            if on_progress is not None:
                on_progress(p)
        finally:
            handled.set()


class QueuedProgress(Progress):
    """Progress of a job still waiting for a worker; ``ahead`` jobs run before it."""

    def __init__(self, ahead: int, total: int) -> None:
        super().__init__("loading", 0, total, 0.0)
        object.__setattr__(self, "ahead", ahead)

    @property
    def message(self) -> str:
        """e.g. ``waiting in the queue (2 jobs ahead)``."""
        ahead = getattr(self, "ahead", 0)
        return "waiting in the queue" + (f" ({ahead} job{'s' if ahead != 1 else ''} ahead)" if ahead else "")

    @property
    def fraction(self) -> float:
        """Nothing done yet."""
        return 0.0


class JobQueue:
    """Accepts jobs into ``store`` and runs them on ``executor``.

    ``max_length`` bounds unfinished jobs (queued + running + paused); ``check`` runs on every
    validated request before it is accepted (e.g. "is the model downloaded?").
    """

    def __init__(self, store: JobStore, executor: Executor, outputs_dir: Path, max_length: int = 1000,
                 max_attempts: int = 3, max_prompt_chars: int = 4000, check: RequestCheck | None = None) -> None:
        self.store = store
        self.executor = executor
        self.outputs_dir = Path(outputs_dir)
        self.max_length = max_length
        self.max_attempts = max_attempts
        self.max_prompt_chars = max_prompt_chars
        self._check = check
        self._lock = AppLock(store.path)
        self._cond = threading.Condition()
        self._version = 0
        self._dirty = True
        self._live: dict[str, Progress] = {}
        # Callers waiting on a job who want every step report, not only the latest.
        self._listeners: dict[str, list[Callable[[Progress], None]]] = {}
        self._started = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.swept: list[Job] = []
        # New jobs are refused while the outputs disk has less than this free, bytes.
        self.disk_reserve_bytes = DEFAULT_RESERVE_BYTES

    # --- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Take the database lock, repair what a dead app left running, start workers + dispatch."""
        if self._started:
            return
        self._lock.acquire()
        self._started = True
        self.swept = self.store.sweep()
        for job in self.swept:
            if job.status in ("failed", "cancelled"):
                drop_claimed_outputs(work_dir_of(self.outputs_dir, job.id))
        remove_stale_temp_files(self.outputs_dir, idle_s=0.0)  # no worker runs yet: all are stale
        self.executor.start(self._on_event)
        self._thread = threading.Thread(target=self._dispatch_loop, name="job-dispatch", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop dispatching and stop the workers; running jobs are requeued at the next start."""
        if not self._started:
            return
        self._stopping.set()
        self._changed()
        if self._thread is not None:
            self._thread.join(5.0)
        running = {j.id: j.attempts for j in self.store.list(("running",))}
        self.executor.shutdown(timeout_s)
        self._give_back(running)
        self._lock.release()
        self._started = False

    def _give_back(self, running: dict[str, int]) -> None:
        """A clean stop is not the jobs' fault: what was running goes back to the queue with the
        attempt it was on handed back (a crash still counts, through the start-up sweep)."""
        for job_id, attempts in running.items():
            fields = {"attempts": max(attempts - 1, 0), "error": "requeued: the app was stopped"}
            try:
                self.store.transition(job_id, "queued", expect=("running",), **fields)
            except (IllegalTransition, JobNotFound):
                self.store.update(job_id, when_status=("queued",), **fields)  # a lost event requeued it

    # --- submitting ----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest | PreparedJob, owner: str = "", priority: int = 0,
               user: str | None = None,
               extra: dict[str, Any] | None = None) -> Job:
        """Validate ``request`` and queue it; returns the stored job (status ``queued``).

        ``owner`` may cancel it; ``user`` is the logged-in name; ``extra`` goes into its sidecar.
        Jobs whose ``extra[GROUP]`` is the same stand or fall together: when one fails or is
        cancelled the queue cancels the others at once (``_cancel_group``).
        Raises ``RequestError`` for bad input and ``QueueFull`` when the queue is at its limit.
        """
        return self.submit_many([request], owner=owner, priority=priority, user=user, extra=extra)[0]

    def submit_many(self, requests: list[GenerationRequest | PreparedJob], owner: str = "", priority: int = 0,
                    batch_id: str | None = None, user: str | None = None,
                    extra: dict[str, Any] | None = None) -> list[Job]:
        """Queue several requests atomically (all or none); see ``submit``. A ``PreparedJob`` was
        checked when it was prepared and is stored as it is; a plain request is validated here."""
        self.start()
        check_free_space(self.outputs_dir, self.disk_reserve_bytes)
        new: list[NewJob] = []
        try:
            for item in requests:
                if isinstance(item, PreparedJob):
                    r, notes = dataclasses.replace(item.request), item.sidecar_notes()
                else:
                    r, notes = validate(item, self.max_prompt_chars), {}
                    if self._check is not None:
                        self._check(r)
                job_id = uuid.uuid4().hex[:12]
                if r.image is not None:
                    r.image = self._keep_input(r.image, job_id)
                new.append(NewJob(r.to_dict(), owner=owner, priority=priority, batch_id=batch_id,
                                  max_attempts=self.max_attempts, id=job_id, user=user,
                                  # The sidecar names its user, so a rebuilt job list keeps who owns it.
                                  extra={**notes, **(extra or {}), **({"user": user} if user else {})}))
            jobs = self.store.add(new, max_active=self.max_length)
        except BaseException:
            # A refused submission (bad row, queue full, disk full) keeps no copy of its images.
            for job in new:
                if job.request.get("image"):
                    Path(job.request["image"]).unlink(missing_ok=True)
            raise
        self._changed()
        return jobs

    def _keep_input(self, image: str, job_id: str) -> str:
        """Copy an uploaded image next to the outputs so a restart days later still finds it."""
        folder = self.outputs_dir / ".inputs"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{job_id}{Path(image).suffix.lower() or '.png'}"
        try:
            shutil.copyfile(image, target)
        except OSError as e:
            target.unlink(missing_ok=True)
            raise RequestError(f"could not keep a copy of the image for the queue: {e.strerror or e}") from None
        return str(target)

    # --- user actions --------------------------------------------------------------------------
    def cancel(self, job_id: str, reason: str = "cancelled before it started") -> Job:
        """Cancel a queued/paused job now (its error becomes ``reason``), or ask a running one to
        stop after its current step."""
        job = self.store.get(job_id)
        if job.status in ("queued", "paused"):
            try:
                job = self.store.transition(job_id, "cancelled", expect=("queued", "paused"), error=reason)
            except IllegalTransition:
                return self.cancel(job_id, reason)  # it was dispatched in between: cancel the running job
            # a job waiting for its retry may hold what its stopped attempt put in place
            drop_claimed_outputs(work_dir_of(self.outputs_dir, job_id))
            self._cancel_group(job)
        elif job.status == "running":
            self.store.update(job_id, cancel_requested=True, progress_text="cancelling…")
            self.executor.cancel(job_id)
            job = self.store.get(job_id)
        else:
            raise IllegalTransition(f"job {job_id} is already {job.status}")
        self._changed()
        return job

    def _cancel_group(self, ended: Job) -> None:
        """``ended`` finished without its video: cancel the unfinished jobs of its group.

        Called from the transition that ended it (the executor's event, or ``cancel``), before the
        dispatcher is woken, so a queued partner never starts and a running one is told to stop
        now rather than when some waiting caller next looks.
        """
        group = ended.extra.get(GROUP)
        if not group:
            return
        for other in self.store.list(ACTIVE):
            if other.id != ended.id and other.extra.get(GROUP) == group:
                try:
                    self.cancel(other.id, f"cancelled because job {ended.id}, queued with it, {ended.status}")
                except (IllegalTransition, JobNotFound):
                    pass  # it finished in between

    def cancel_owner(self, owner: str) -> int:
        """Cancel every unfinished job of ``owner``; returns how many were asked to stop."""
        n = 0
        for job in self.store.list(ACTIVE):
            if job.owner == owner:
                try:
                    self.cancel(job.id)
                    n += 1
                except (IllegalTransition, JobNotFound):
                    pass
        return n

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again (at the end, attempts reset)."""
        pos = self.store.queued_in_order()
        job = self.store.transition(job_id, "queued", expect=("failed", "cancelled"), attempts=0,
                                    error=None, outputs=[], started_at=None,
                                    position=(max(j.position for j in pos) + 1) if pos else time.time())
        self._changed()
        return job

    def delete(self, job_id: str) -> None:
        """Remove a job that is not running from the list (its video files stay on disk)."""
        self.store.delete(job_id)
        self._live.pop(job_id, None)
        # What an unfinished job's stopped attempt put in place (a done job's claim is gone already),
        # and the finished windows of an unfinished long clip, kept for a retry that will not come now.
        drop_claimed_outputs(work_dir_of(self.outputs_dir, job_id))
        shutil.rmtree(work_dir_of(self.outputs_dir, job_id), ignore_errors=True)
        self._changed()

    def pause(self, job_id: str) -> Job:
        """Hold a queued job back until ``resume``."""
        job = self.store.transition(job_id, "paused", expect=("queued",))
        self._changed()
        return job

    def resume(self, job_id: str) -> Job:
        """Put a paused job back in the queue at its old place."""
        job = self.store.transition(job_id, "queued", expect=("paused",))
        self._changed()
        return job

    def set_priority(self, job_id: str, priority: int) -> Job:
        """Higher priority runs first; equal priorities run in submission order."""
        job = self.store.get(job_id)
        if job.status not in ("queued", "paused"):
            raise IllegalTransition(f"job {job_id} is {job.status}; only waiting jobs can be reprioritised")
        job = self.store.set_order(job_id, int(priority), job.position)
        self._changed()
        return job

    def move(self, job_id: str, where: Move) -> Job:
        """Move a queued job one place up/down or to the top/bottom of the dispatch order.

        The job takes the priority of the neighbour it lands next to, so the order the user sees
        is the order the dispatcher follows.
        """
        order = self.store.queued_in_order()
        ids = [j.id for j in order]
        if job_id not in ids:
            raise IllegalTransition(f"job {self.store.get(job_id).status}: only queued jobs can be moved")
        i = ids.index(job_id)
        target = {"top": 0, "up": max(i - 1, 0), "down": min(i + 1, len(ids) - 1), "bottom": len(ids) - 1}[where]
        if target == i:
            return order[i]
        others = [j for j in order if j.id != job_id]
        before = others[target - 1] if target > 0 else None
        after = others[target] if target < len(others) else None
        anchor = after if after is not None else before
        assert anchor is not None
        if after is not None and before is not None and before.priority == after.priority:
            position = (before.position + after.position) / 2
        elif after is not None:
            position = after.position - 1
        else:
            position = before.position + 1  # type: ignore[union-attr]
        job = self.store.set_order(job_id, anchor.priority, position)
        self._changed()
        return job

    # --- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        """The job as stored now."""
        return self.store.get(job_id)

    def live_progress(self, job_id: str) -> Progress | None:
        """The last step report of a running job (finer than the stored fraction)."""
        return self._live.get(job_id)

    def progress_of(self, job: Job) -> Progress:
        """A ``Progress`` for any job state, for progress bars."""
        steps = int(job.request.get("steps") or 0)
        if job.status in ("queued", "paused"):
            return QueuedProgress(self.store.queued_ahead(job.id), steps)
        live = self._live.get(job.id)
        if live is not None and job.status == "running":
            return live
        if job.status == "done":
            return Progress("done", steps, steps, 0.0)
        return Progress("loading", 0, steps, 0.0)

    def wait(self, job_id: str, on_change: Callable[[Job], None] | None = None,
             timeout_s: float | None = None, on_progress: Callable[[Progress], None] | None = None) -> Job:
        """Block until ``job_id`` is finished (or ``timeout_s`` seconds pass); returns the job.

        ``on_change`` sees the stored job after changes (several may be seen as one).
        ``on_progress`` gets every step report, called in *this* thread (so a Gradio progress bar
        works); the job waits for it to return, up to ``LISTENER_TIMEOUT_S``, as when it ran inline.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        inbox: queue.Queue[tuple[Progress, threading.Event]] = queue.Queue()

        def listener(p: Progress) -> None:
            handled = threading.Event()
            inbox.put((p, handled))
            self._changed()
            handled.wait(LISTENER_TIMEOUT_S)

        if on_progress is not None:
            self._listeners.setdefault(job_id, []).append(listener)
        seen = -1
        try:
            while True:
                with self._cond:
                    if self._version == seen and inbox.empty():
                        self._cond.wait(0.5)
                    seen = self._version
                _drain(inbox, on_progress)
                job = self.store.get(job_id)
                if on_change is not None:
                    on_change(job)
                if job.finished or (deadline is not None and time.monotonic() >= deadline):
                    _drain(inbox, on_progress)
                    return job
        finally:
            if on_progress is not None:
                self._listeners.get(job_id, []).remove(listener)
                if not self._listeners.get(job_id):
                    self._listeners.pop(job_id, None)
                _drain(inbox, None)

    # --- dispatch and events -------------------------------------------------------------------
    def _changed(self) -> None:
        with self._cond:
            self._version += 1
            self._dirty = True
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                while not self._dirty and not self._stopping.is_set():
                    self._cond.wait(1.0)
                self._dirty = False
            if not self._stopping.is_set():
                try:
                    self._dispatch_once()
                except StoreError as e:  # e.g. the database's disk is full: try again each second
                    log.warning("dispatch waits: %s", e)
                    self._dirty = True
                except Exception:  # noqa: BLE001 - the dispatcher must outlive any one bad job
                    log.exception("dispatch failed")

    def _dispatch_once(self) -> None:
        idle = self.executor.idle_workers()
        while idle:
            job = self.store.next_queued()
            if job is None:
                return
            worker = self._worker_for(job, idle)
            if worker is None:
                # The head job waits for its pinned GPU; the first later job that can go now goes.
                job, worker = next(((j, w) for j in self.store.queued_in_order()
                                    if (w := self._worker_for(j, idle)) is not None), (None, None))
                if job is None or worker is None:
                    return
            idle.remove(worker)
            try:
                job = self.store.transition(job.id, "running", expect=("queued",), worker=worker.name,
                                            progress_text="starting", error=None)
            except IllegalTransition:
                continue
            try:
                self.executor.submit(worker.name, job.id, GenerationRequest.from_dict(job.request), job.extra)
            except WorkerGone as e:
                self.store.transition(job.id, "queued", attempts=job.attempts - 1, error=str(e))
            self._changed()

    def _worker_for(self, job: Job, idle: list[WorkerInfo]) -> WorkerInfo | None:
        """The idle worker for ``job``: one with its model loaded if any; a job pinned to a GPU
        (Advanced tab override) only that GPU's worker, None while it is busy."""
        pinned = (job.request.get("overrides") or {}).get("gpu")
        if pinned and any(w.device == pinned for w in self.executor.workers()):
            return next((w for w in idle if w.device == pinned), None)
        model = job.request.get("model")
        return next((w for w in idle if model in w.loaded), idle[0])

    def _on_event(self, ev: JobEvent) -> None:
        try:
            self._apply(ev)
        except (IllegalTransition, JobNotFound) as e:
            log.warning("ignored %s event for job %s: %s", ev.kind, ev.job_id, e)
        except StoreError as e:
            # The database's disk is full. A progress report can go; an outcome is applied again
            # every few seconds until space returns. Raising here would stop the worker's supervisor.
            if ev.kind not in ("progress", "started"):
                log.warning("%s event for job %s waits: %s", ev.kind, ev.job_id, e)
                retry = threading.Timer(STORE_RETRY_S, self._on_event, args=(ev,))
                retry.daemon = True
                retry.start()
        finally:
            if ev.kind != "progress" or ev.job_id:
                self._changed()

    def _apply(self, ev: JobEvent) -> None:
        if ev.kind == "ready":
            return
        if ev.kind == "started":
            self.store.update(ev.job_id, started_at=ev.at, progress_text="loading model")
        elif ev.kind == "progress" and ev.progress is not None:
            p = Progress(**ev.progress)
            self._live[ev.job_id] = p
            for listener in list(self._listeners.get(ev.job_id, ())):
                try:
                    listener(p)
                except Exception:  # noqa: BLE001 - a caller's progress bar must not break the job
                    log.exception("progress listener failed")
            self.store.update(ev.job_id, progress=p.fraction, progress_text=p.message, eta_s=p.eta_s)
        elif ev.kind == "done":
            self._live.pop(ev.job_id, None)
            self.store.transition(ev.job_id, "done", expect=("running",), outputs=list(ev.outputs),
                                  progress=1.0, progress_text="done", eta_s=None, finished_at=ev.at,
                                  plan=ev.plan, error=None)
            shutil.rmtree(work_dir_of(self.outputs_dir, ev.job_id), ignore_errors=True)
        elif ev.kind in ("failed", "cancelled"):
            self._live.pop(ev.job_id, None)
            self._cancel_group(self.store.transition(ev.job_id, ev.kind, expect=("running",), error=ev.error,
                                                     eta_s=None, finished_at=ev.at))
        elif ev.kind == "lost":
            self._live.pop(ev.job_id, None)
            if self._stopping.is_set():
                return  # stopped by close(), which hands the job back without using an attempt
            self._requeue_lost(self.store.get(ev.job_id), ev.error or "the worker process stopped")
        if ev.kind in ("done", "failed", "cancelled", "lost"):
            # Once what the job (or a dead worker) left half-written has gone idle, remove it.
            sweep = threading.Timer(IDLE_S + 1.0, remove_stale_temp_files, args=(self.outputs_dir,))
            sweep.daemon = True
            sweep.start()

    def _requeue_lost(self, job: Job, why: str) -> None:
        if job.status != "running":
            return
        work_dir = work_dir_of(self.outputs_dir, job.id)
        earlier = finished_earlier(work_dir, job.id)
        if earlier is not None:
            # The worker wrote the video and its sidecar, then stopped before reporting: it is done.
            self.store.transition(job.id, "done", outputs=[str(p) for p in earlier], progress=1.0,
                                  progress_text="done", eta_s=None, finished_at=time.time(), error=None)
            shutil.rmtree(work_dir, ignore_errors=True)
        elif job.cancel_requested:
            self._cancel_group(self.store.transition(job.id, "cancelled", error=f"cancelled ({why})"))
            drop_claimed_outputs(work_dir)
        elif job.attempts >= job.max_attempts:
            self._cancel_group(self.store.transition(job.id, "failed", error=(
                f"{why} during each of {job.attempts} attempts; giving up ({_likely_cause(why)})")))
            drop_claimed_outputs(work_dir)
        else:
            self.store.transition(job.id, "queued", error=f"requeued: {why} during attempt {job.attempts}")


def _likely_cause(why: str) -> str:
    """What most often stops a worker the way ``why`` says, for the job's final error."""
    if "SIGKILL" in why:
        return ("a worker killed this way has most often run out of the computer's RAM: the system's "
                "out-of-memory killer stops it (on Linux `dmesg` says so); a smaller model or an fp8 / GGUF "
                "file needs less; else see the app log")
    return "see the app log; a model too large for this GPU is the usual cause"
