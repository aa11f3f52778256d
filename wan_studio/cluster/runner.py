"""Runs one job on a model manager and reports it as plain-dict messages.

Shared by the worker process (``worker.py``) and the in-process executor (``inline.py``), so both
report the same events: ``started``, ``progress``*, then exactly one of ``done`` / ``failed`` /
``cancelled``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.caches import MagRatios
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn
from wan_studio.engine.job import (calibration_dir_of, claim_outputs, drop_claimed_outputs, execute,
                                   finished_earlier, work_dir_of)
from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.engine.video_io import write_json
from wan_studio.memory.overrides import PlanOverrides, overrides_of
from wan_studio.memory.manager import ModelManager
from wan_studio.memory.plan import Plan
from wan_studio.memory.recovery import Attempt, OutOfMemoryEverywhere, run_with_recovery

Send = Callable[[dict[str, Any]], None]
# (total steps, progress callback, cancel event) -> a between-steps hook (the thermal guard) or None.
GuardFactory = Callable[[int, ProgressFn, threading.Event], Any]
# A validated request -> its memory plans, chosen first, lighter fallbacks after (raises RequestError).
PlanLadder = Callable[[GenerationRequest], list[Plan]]


class JobRunner:
    """Runs jobs with a manager that outlives them, so models stay loaded between jobs."""

    def __init__(self, name: str, manager: ModelManager, outputs_dir: Path, send: Send,
                 guard_factory: GuardFactory | None = None, plans: PlanLadder | None = None,
                 loras_dir: Path | None = None) -> None:
        self.plans = plans
        self.loras_dir = Path(loras_dir) if loras_dir is not None else Path("loras")
        # Calibrated MagCache ratios live beside the outputs, so every worker of this app sees them.
        self.ratios = MagRatios(calibration_dir_of(outputs_dir))
        self.name = name
        self.manager = manager
        self.outputs_dir = Path(outputs_dir)
        self.send = send
        self.guard_factory = guard_factory

    def run(self, job_id: str, request: dict[str, Any], cancel: threading.Event,
            extra: dict[str, Any] | None = None) -> None:
        """Run one job and send exactly one terminal message for it; never raises."""
        self.send({"ev": "started", "job_id": job_id, "at": time.time(), "loaded": list(self.manager.loaded())})

        def report(p: Progress) -> None:
            self.send({"ev": "progress", "job_id": job_id, "progress": dataclasses.asdict(p)})

        try:
            req = GenerationRequest.from_dict(request)
            spec = get_spec(req.model)
            report(Progress("loading", 0, req.steps or 0, 0.0))
            warm = spec.key in self.manager.loaded()
            sidecar: dict[str, Any] = {**(extra or {}), "job_id": job_id, "worker": self.name,
                                       "model_was_loaded": warm}
            guard = self.guard_factory(req.steps or 0, report, cancel) if self.guard_factory else None
            if guard is not None:
                sidecar["thermal_pauses"] = guard.records

            pinned = overrides_of(req)
            if pinned.to_dict():
                sidecar["overrides"] = pinned.to_dict()
            # Kept across crashes and retries of this job: a long clip resumes at its first missing window.
            work_dir = work_dir_of(self.outputs_dir, job_id)
            earlier = finished_earlier(work_dir, job_id)
            if earlier is not None:
                # A previous attempt wrote everything and was stopped before the job was recorded done.
                self.send({"ev": "done", "job_id": job_id, "at": time.time(), "plan": "",
                           "outputs": [str(p) for p in earlier], "loaded": list(self.manager.loaded())})
                shutil.rmtree(work_dir, ignore_errors=True)
                return
            paths = claim_outputs(self.outputs_dir, work_dir, req)

            def attempt(plan: Plan | None, before: tuple[Attempt, ...] = ()) -> Any:
                with self.manager.use(spec, plan) as pipe, speed_knobs(pipe, pinned, plan, sidecar):
                    if plan is not None:
                        sidecar.update(placement=plan.label, plan=plan.to_dict(), plan_retries=len(before),
                                       plan_attempts=[a.to_dict() for a in before] + [Attempt(plan.label).to_dict()])
                    if sidecar.get("calibrate_magcache"):
                        return self._calibrate(pipe, req, report, cancel, sidecar, paths)
                    return execute(pipe, req, self.outputs_dir, loras_dir=self.loras_dir, work_dir=work_dir,
                                   ratios=self.ratios, on_progress=report, cancel=cancel, between_steps=guard,
                                   extra_sidecar=sidecar, paths=paths)

            if self.plans is None:
                result = attempt(None)
            else:
                try:
                    # An out-of-memory error retries the job with the next, lighter plan.
                    result = run_with_recovery(self.plans(req), attempt).value
                except OutOfMemoryEverywhere as e:
                    raise RequestError(str(e)) from None
            plan = str(sidecar.get("placement", ""))
            self.send({"ev": "done", "job_id": job_id, "at": time.time(), "plan": plan,
                       "outputs": [str(result.video_path), str(result.sidecar_path)],
                       "loaded": list(self.manager.loaded())})
            # Only now: until the job is reported done, a retry must find the claimed output names.
            shutil.rmtree(work_dir, ignore_errors=True)
        except GenerationCancelled as e:
            drop_claimed_outputs(work_dir_of(self.outputs_dir, job_id))
            self.send({"ev": "cancelled", "job_id": job_id, "at": time.time(), "error": str(e)})
        except (RequestError, KeyError, FileNotFoundError, OSError) as e:
            # OSError carries the disk-full wording of the video writer; a user can act on these.
            drop_claimed_outputs(work_dir_of(self.outputs_dir, job_id))
            self.send({"ev": "failed", "job_id": job_id, "at": time.time(), "error": _user_text(e)})
        except Exception as e:  # noqa: BLE001 - any model error must reach the user, not kill the worker
            traceback.print_exc()
            drop_claimed_outputs(work_dir_of(self.outputs_dir, job_id))
            self.send({"ev": "failed", "job_id": job_id, "at": time.time(), "error": f"{type(e).__name__}: {e}"})


    def _calibrate(self, pipe: Any, req: GenerationRequest, report: ProgressFn, cancel: threading.Event,
                   sidecar: dict[str, Any], paths: tuple[Path, Path] | None = None) -> Any:
        """Run ``req`` in MagCache calibration mode and store the measured ratios for its model."""
        from wan_studio.engine.caches import expert_steps, magcache_calibration, mode_of, ratios_from_capture
        from wan_studio.engine.generate import generate

        if req.step_cache or req.total_frames is not None:
            raise RequestError("calibrate with a plain clip: no step cache, no long clip")
        spec = get_spec(req.model)
        with magcache_calibration(pipe, req) as capture:
            result = generate(pipe, req, self.outputs_dir, report, cancel, extra_sidecar=sidecar, paths=paths)
        ratios = ratios_from_capture(capture, len(expert_steps(pipe, spec, req)))
        path = self.ratios.save(spec.key, mode_of(req), ratios, req.steps)
        data = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
        data["magcache_calibration"] = {"model": spec.key, "mode": mode_of(req), "steps": req.steps,
                                        "file": str(path), "ratios": ratios}
        write_json(result.sidecar_path, data)
        return result


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
