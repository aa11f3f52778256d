"""One job on a ``WorkerRuntime``: claim the outputs, plan, borrow the pipeline, apply the job's
speed knobs, run (or calibrate MagCache), recover from out-of-memory with a lighter plan, and send
exactly one terminal message. Every executor's jobs take this path (see ``runtime.py``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.compile_log import job_shapes
from wan_studio.engine.generate import GenerationCancelled, Progress
from wan_studio.engine.job import claim_outputs, drop_claimed_outputs, execute, finished_earlier, work_dir_of
from wan_studio.engine.preview import LivePreview
from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.engine.video_io import write_record
from wan_studio.engine.warmup import ATTENTION_TURN
from wan_studio.memory import costs
from wan_studio.memory.manager import ASSEMBLY_ATTR
from wan_studio.memory.overrides import PlanOverrides, overrides_of
from wan_studio.memory.pinned_offload import pinning_of
from wan_studio.memory.plan import Plan, Workload
from wan_studio.memory.recovery import Attempt, OutOfMemoryEverywhere, run_with_recovery

if TYPE_CHECKING:
    from wan_studio.cluster.runtime import JobHooks, Send, WorkerRuntime


class JobPath:
    """The state of one job while it runs on ``runtime`` (built and run by ``run_job``)."""

    def __init__(self, runtime: WorkerRuntime, job_id: str, request: Any, cancel: threading.Event, send: Send,
                 extra: dict[str, Any], hooks: JobHooks) -> None:
        self.rt, self.job_id, self.raw, self.cancel, self.send, self.hooks = runtime, job_id, request, cancel, send, hooks
        self.outputs_dir = hooks.outputs_dir or runtime.outputs_dir
        self.work_dir = hooks.work_dir or work_dir_of(self.outputs_dir, job_id)
        self.sidecar: dict[str, Any] = {**extra, "job_id": job_id, "worker": runtime.name, "host": runtime.host,
                                        "worker_settings": runtime.settings()}
        self.t0 = time.perf_counter()
        # The mp4 write of this job when the runtime writes in the background (``_defer``).
        self._pending: Any = None
        self.preview = LivePreview(self.work_dir)

    def _msg(self, ev: str, **fields: Any) -> None:
        self.send({"ev": ev, "job_id": self.job_id, "at": time.time(), **fields})

    def report(self, p: Progress) -> None:
        """Send one progress message."""
        self._msg("progress", progress=dataclasses.asdict(p))

    def run(self) -> None:
        """Run the job; never raises (every ending is a message)."""
        self._msg("started", loaded=self.rt.loaded())
        try:
            req = self.raw if isinstance(self.raw, GenerationRequest) else GenerationRequest.from_dict(self.raw)
            earlier = finished_earlier(self.work_dir, self.job_id)
            if earlier is not None:
                # A previous attempt wrote everything and was stopped before the job was recorded done.
                self._done(earlier[0], earlier[1], "")
                return
            try:
                result = self._generate(req)
            finally:
                # Only while the job runs: a finished job shows its video, a failed one nothing.
                self.preview.remove()
            if self._pending is not None:
                # The GPU is done with this job: the worker may take the next one while the writer
                # encodes. The job stays unfinished (and its claim kept) until the write is in place.
                write, plan = self._pending, str(self.sidecar.get("placement", ""))
                self._msg("free", loaded=self.rt.loaded())
                self.rt.writer.submit(lambda: self._write(write, plan))
                return
            self._done(result.video_path, result.sidecar_path, str(self.sidecar.get("placement", "")))
        except Exception as e:  # noqa: BLE001 - every ending is a message
            self._ended(e)

    def _write(self, write: Any, plan: str) -> None:
        """Run a deferred write on the runtime's writer thread and report the job's ending."""
        try:
            result = write()
            self._done(result.video_path, result.sidecar_path, plan)
        except Exception as e:  # noqa: BLE001 - every ending is a message
            self._ended(e)

    def _defer(self, write: Any) -> None:
        self._pending = write

    def _ended(self, error: Exception) -> None:
        """The terminal message for a job stopped by ``error``."""
        try:
            raise error
        except GenerationCancelled as e:
            drop_claimed_outputs(self.work_dir)
            self._msg("cancelled", error=str(e))
        except self.hooks.lost_on as e:
            self._msg("lost", error=str(e))
        except (RequestError, KeyError, FileNotFoundError, OSError) as e:
            # OSError carries the disk-full wording of the video writer; a user can act on these.
            drop_claimed_outputs(self.work_dir)
            self._msg("failed", error=_user_text(e))
        except Exception as e:  # noqa: BLE001 - any model error must reach the user, not kill the worker
            traceback.print_exc()
            drop_claimed_outputs(self.work_dir)
            self._msg("failed", error=f"{type(e).__name__}: {e}")

    def _done(self, video: Path, sidecar: Path, plan: str) -> None:
        fields = self.hooks.on_done(video, sidecar) if self.hooks.on_done else {}
        self._msg("done", plan=plan, outputs=[str(video), str(sidecar)], loaded=self.rt.loaded(), **fields)
        # Only now: until the job is reported done, a retry must find the claimed output names.
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _generate(self, req: GenerationRequest) -> Any:
        spec = get_spec(req.model)
        mine = self.hooks.variant(spec) if self.hooks.variant else spec
        self.report(Progress("loading", 0, req.steps or 0, 0.0))
        loaded = mine.key in self.rt.loaded()
        self.sidecar["model_was_loaded"] = loaded
        if not loaded:  # loaded afresh: compiled from the start
            self.rt.compile_log.forget(mine.key)
        shapes = job_shapes(req, costs.arch(mine).expand_timesteps)
        pinned = overrides_of(req)
        if pinned.to_dict():
            self.sidecar["overrides"] = pinned.to_dict()
        guard = self._guard_session(req)
        paths = claim_outputs(self.outputs_dir, self.work_dir, req)
        borrow = self.hooks.borrow or self.rt.manager.use

        def attempt(plan: Plan, before: tuple[Attempt, ...] = ()) -> Any:
            self.sidecar.update(placement=plan.label, plan=plan.to_dict(), plan_retries=len(before),
                                plan_attempts=[a.to_dict() for a in before] + [Attempt(plan.label).to_dict()])
            t_borrow = time.perf_counter()
            # A cold model's blocks are compiled on a throwaway block while its weights load.
            warm = self.rt.warmup_for(mine, plan, Workload.from_request(req), start=True)
            with ExitStack() as held:
                with self._loading_reports(mine, req.steps or 0):
                    pipe = held.enter_context(borrow(mine, plan))
                # loading, pinning and placing the model (≈ 0 when the worker already holds it so)
                self.sidecar["load_s"] = round(time.perf_counter() - t_borrow, 3)
                if not self.sidecar["model_was_loaded"]:
                    # its own assembly or the one it waited for (the worker's preparation)
                    self.sidecar["load_parts"] = getattr(pipe, ASSEMBLY_ATTR, None)
                pinner = pinning_of(pipe)
                if pinner is not None and not (self.sidecar["model_was_loaded"] and pinner.record["done"]):
                    # the model-offloaded copies being pinned in the background (as the sidecar is written)
                    self.sidecar["pinning_behind"] = pinner.record
                if warm is not None:
                    # never beside the first step: it would compile the same graph a second time
                    self.sidecar["compile_warmup"] = warm.wait()
                    self.rt.warmup_done(warm)
                    if self.sidecar["compile_warmup"].get("ran"):  # its first shape is compiled already
                        self.rt.compile_log.ran(mine.key, shapes[:1])
                # any other warm-up (the worker's preparation at another plan) ends first: attention's
                # backend flags are the process's, not the thread's (engine.warmup.ATTENTION_TURN)
                t_turn = time.perf_counter()
                held.enter_context(ATTENTION_TURN)
                if time.perf_counter() - t_turn > 0.05:
                    self.sidecar["waited_for_other_warmup_s"] = round(time.perf_counter() - t_turn, 3)
                held.enter_context(speed_knobs(pipe, pinned, plan, self.sidecar))
                # what this job's shapes make the worker compile, for its predicted time
                self.sidecar["compile_needs"] = self.rt.compile_log.needs(mine.key, shapes, compiled(pipe))
                with (self.hooks.wrap(pipe, self.sidecar) if self.hooks.wrap else _as_is(pipe)) as runner:
                    result = self._attempt(runner, req, guard, paths)
                self.rt.compile_log.ran(mine.key, shapes)
                return result

        def retrying(plan: Plan, error: str) -> None:
            # the user sees why the job starts over, while the lighter plan loads
            self.report(Progress("loading", 0, req.steps or 0, time.perf_counter() - self.t0,
                                 note=f"out of GPU memory with {plan.label}; trying a lighter plan"))

        try:
            # An out-of-memory error retries the job with the next, lighter plan.
            return run_with_recovery(self.rt.plans(mine, req), attempt, on_retry=retrying).value
        except OutOfMemoryEverywhere as e:
            raise RequestError(str(e)) from None

    @contextmanager
    def _loading_reports(self, spec: Any, steps: int, every_s: float = 0.2) -> Iterator[None]:
        """While the block waits for the pipeline, report what the manager is doing with it
        ("loading Wan2.2 TI2V-5B 46 %", "placing …"), its own load or the worker's preparation."""
        status = getattr(self.rt.manager, "status", None)
        if status is None:
            yield
            return
        stop = threading.Event()

        def watch() -> None:
            said = None
            while True:
                now = status(spec.key)
                text = now.describe() if now is not None else None
                if text is not None and text != said:
                    self.report(Progress("loading", 0, steps, time.perf_counter() - self.t0, note=text))
                    said = text
                if stop.wait(every_s):
                    return

        watcher = threading.Thread(target=watch, name=f"load-status-{self.job_id}", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()

    def _guard_session(self, req: GenerationRequest) -> Any:
        """The thermal guard's session for this job's GPUs (None without samples)."""
        guard = self.rt.guard
        if guard is None or not guard.read():
            return None

        def note(step: int, text: str) -> None:
            self.report(Progress("paused", step, req.steps or 0, time.perf_counter() - self.t0, note=text))

        session = guard.session(self.rt.host, on_note=note, cancel=self.cancel)
        self.sidecar["thermal_pauses"] = session.records
        return session

    def _attempt(self, pipe: Any, req: GenerationRequest, guard: Any, paths: tuple[Path, Path]) -> Any:
        hook = self.hooks.between

        def between(step: int) -> None:
            if hook is not None:
                hook(step)
            if guard is not None:
                guard(step)

        if self.sidecar.get("calibrate_magcache"):
            return self._calibrate(pipe, req, between, paths)
        later = self._defer if self.rt.writer is not None else None
        return execute(pipe, req, self.outputs_dir, loras_dir=self.rt.loras_dir, work_dir=self.work_dir,
                       ratios=self.rt.ratios, on_progress=self.report, cancel=self.cancel, between_steps=between,
                       extra_sidecar=self.sidecar, paths=paths, write_later=later,
                       preview=self.preview)

    def _calibrate(self, pipe: Any, req: GenerationRequest, between: Any, paths: tuple[Path, Path]) -> Any:
        """Run ``req`` in MagCache calibration mode and store the measured ratios for its model."""
        from wan_studio.engine.caches import expert_steps, magcache_calibration, mode_of, ratios_from_capture
        from wan_studio.engine.generate import generate

        if req.step_cache or req.total_frames is not None:
            raise RequestError("calibrate with a plain clip: no step cache, no long clip")
        spec = get_spec(req.model)
        with magcache_calibration(pipe, req) as capture:
            result = generate(pipe, req, self.outputs_dir, self.report, self.cancel, extra_sidecar=self.sidecar,
                              between_steps=between, paths=paths)
        ratios = ratios_from_capture(capture, len(expert_steps(pipe, spec, req)))
        path = self.rt.ratios.save(spec.key, mode_of(req), ratios, req.steps)
        data = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
        data["magcache_calibration"] = {"model": spec.key, "mode": mode_of(req), "steps": req.steps,
                                        "file": str(path), "ratios": ratios}
        write_record(result.video_path, result.sidecar_path, data)
        return result


def compiled(pipe: Any) -> bool:
    """The pipeline's transformer blocks are torch.compiled (``engine.accel.apply_speed`` and the
    job's speed knobs record it on the pipeline)."""
    return bool((getattr(pipe, "wan_speed", None) or {}).get("compile"))


@contextmanager
def _as_is(pipe: Any) -> Iterator[Any]:
    yield pipe


@contextmanager
def speed_knobs(pipe: Any, pinned: PlanOverrides, plan: Plan | None, sidecar: dict[str, Any]) -> Iterator[None]:
    """Apply a job's pinned attention kernel, compile choice and VAE decode precision on top of the
    worker's speed options (``engine.accel.apply_speed``, run when the plan was applied), and put the
    worker's kernel and fp32 decode back after the job, since the pipeline is cached. Compiled blocks
    stay compiled (same maths)."""
    from wan_studio.engine.accel import apply_attention_backend, compile_transformers, decode_precision

    before = getattr(pipe, "wan_speed", None)
    record = dict(before or {"attention": "sdpa", "compile": False})
    if pinned.attention is not None:
        try:
            apply_attention_backend(pipe, pinned.attention)
        except ValueError as e:
            raise RequestError(str(e)) from None
        record.update(attention=pinned.attention, attention_why="pinned for this job (Advanced tab)")
        sidecar["attention_backend"] = pinned.attention
    if pinned.compile and not record.get("compile"):
        main = plan.placement("transformer") if plan is not None else None
        offload = {"model_offload": "model", "resident": "resident"}.get(main.offload if main else "resident", "group")
        compile_transformers(pipe, offload)
        record["compile"] = True
    elif pinned.compile is False and record.get("compile"):
        record["compile_note"] = "already compiled when the model was loaded; compile off applies to a fresh load"
    if pinned.decode is not None:
        record["vae_decode"] = pinned.decode
        sidecar["vae_decode"] = pinned.decode
    pipe.wan_speed = record  # the sidecar's "speed" reports what this job ran with
    try:
        with decode_precision(pipe, pinned.decode or "fp32"):
            yield
    finally:
        if pinned.attention is not None:
            apply_attention_backend(pipe, (before or {}).get("attention", "sdpa"))
        # The kernel is the worker's again; a compile done here stays with the cached pipeline.
        pipe.wan_speed = {**before, "compile": bool(before.get("compile") or record["compile"])} if before else (
            {"attention": "sdpa", "compile": True} if record["compile"] else None)


def _user_text(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.strerror and not e.filename:
        return e.strerror
    return str(e)
