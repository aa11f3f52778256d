"""Runs one job on a model manager and reports it as plain-dict messages.

Shared by the worker process (``worker.py``) and the in-process executor (``inline.py``), so both
report the same events: ``started``, ``progress``*, then exactly one of ``done`` / ``failed`` /
``cancelled``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn, generate
from wan_studio.engine.request import GenerationRequest, RequestError
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
                 guard_factory: GuardFactory | None = None, plans: PlanLadder | None = None) -> None:
        self.plans = plans
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

            def attempt(plan: Plan | None, before: tuple[Attempt, ...] = ()) -> Any:
                with self.manager.use(spec, plan) as pipe:
                    if plan is not None:
                        sidecar.update(placement=plan.label, plan=plan.to_dict(), plan_retries=len(before),
                                       plan_attempts=[a.to_dict() for a in before] + [Attempt(plan.label).to_dict()])
                    return generate(pipe, req, self.outputs_dir, report, cancel, extra_sidecar=sidecar,
                                    between_steps=guard)

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
        except GenerationCancelled as e:
            self.send({"ev": "cancelled", "job_id": job_id, "at": time.time(), "error": str(e)})
        except (RequestError, KeyError, FileNotFoundError, OSError) as e:
            # OSError carries the disk-full wording of the video writer; a user can act on these.
            self.send({"ev": "failed", "job_id": job_id, "at": time.time(), "error": _user_text(e)})
        except Exception as e:  # noqa: BLE001 - any model error must reach the user, not kill the worker
            traceback.print_exc()
            self.send({"ev": "failed", "job_id": job_id, "at": time.time(), "error": f"{type(e).__name__}: {e}"})


def _user_text(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.strerror and not e.filename:
        return e.strerror
    return str(e)
