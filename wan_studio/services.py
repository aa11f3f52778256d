"""Wiring: builds the catalog view, model manager and presets once, and runs jobs for the UI/API."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from wan_studio.catalog import loading
from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn, generate
from wan_studio.engine.request import GenerationRequest, GenerationResult, RequestError, validate
from wan_studio.memory import hardware as hardware_mod
from wan_studio.memory.costs import HOST_OVERHEAD_BYTES
from wan_studio.memory.hardware import Hardware
from wan_studio.memory.loaders import FolderLoader
from wan_studio.memory.manager import ModelManager
from wan_studio.memory.plan import Limits, NoPlanFits, Plan, Workload
from wan_studio.memory.planner import plan_ladder
from wan_studio.memory.recovery import Attempt, OutOfMemoryEverywhere, run_with_recovery
from wan_studio.presets import Preset, load_presets
from wan_studio.settings import Settings

__all__ = ["Studio", "GenerationCancelled", "RequestError", "ModelUnavailable", "DoesNotFit"]


class ModelUnavailable(RequestError):
    """The request names a model that is not downloaded or is incomplete; says how to fix it."""


class DoesNotFit(RequestError):
    """No memory plan runs the request on this machine; the message says what is short."""


@dataclass
class Studio:
    """The services one app process uses. Build with ``Studio.create(settings)``."""

    settings: Settings
    manager: ModelManager
    presets: dict[str, Preset]
    # One GPU job at a time in this process; the persistent queue replaces this with workers.
    _run_lock: threading.Lock = field(default_factory=threading.Lock)
    _cancels: dict[str, threading.Event] = field(default_factory=dict)
    _cancels_lock: threading.Lock = field(default_factory=threading.Lock)
    hardware: Hardware = field(default_factory=Hardware)
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None,
               hardware: Hardware | None = None) -> Studio:
        """Build every service from ``settings``; the hardware is read once, at start."""
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        hardware = hardware or hardware_mod.detect()
        limits = Limits(allow_fp8=settings.allow_fp8, allow_8bit=settings.allow_8bit)
        budget = int(hardware.host_total_bytes * limits.host_fraction) - HOST_OVERHEAD_BYTES
        manager = manager or ModelManager(FolderLoader(settings.models_dir), budget_bytes=max(budget, 0))
        return cls(settings=settings, manager=manager, presets=load_presets(), hardware=hardware, limits=limits)

    def plans(self, request: GenerationRequest) -> list[Plan]:
        """The memory plans for a validated request, chosen first, lighter fallbacks after."""
        try:
            return plan_ladder(get_spec(request.model), Workload.from_request(request), self.hardware, self.limits)
        except NoPlanFits as e:
            raise DoesNotFit(str(e)) from None

    def unload_models(self) -> str:
        """Free every model nobody is using; a line for the UI."""
        dropped = self.manager.unload_all()
        busy = self.manager.loaded()
        text = f"Unloaded {len(dropped)} component(s)." if dropped else "Nothing to unload."
        return text + (f" In use, kept: {', '.join(busy)}." if busy else "")

    def availability(self, spec: ModelSpec) -> loading.Availability:
        """Whether ``spec`` can be loaded now, and how to get it if not."""
        return loading.availability(spec, self.settings.models_dir)

    def models(self) -> list[loading.Availability]:
        """Availability of every model in the catalog."""
        return [self.availability(s) for s in CATALOG.values()]

    def presets_for(self, workflow: str) -> list[Preset]:
        """Presets of one tab, in file order."""
        return [p for p in self.presets.values() if p.workflow == workflow]

    def default_preset(self, workflow: str) -> Preset:
        """The first preset of ``workflow`` whose model is usable now (the demo always is)."""
        candidates = self.presets_for(workflow)
        wanted = self.settings.default_model
        ordered = sorted(candidates, key=lambda p: p.fields["model"] != wanted) if wanted else candidates
        for p in ordered:
            if self.availability(get_spec(p.fields["model"])).usable:
                return p
        return candidates[-1]

    def run(
        self,
        request: GenerationRequest,
        owner: str = "local",
        on_progress: ProgressFn | None = None,
    ) -> GenerationResult:
        """Validate and run ``request`` to completion; ``owner`` is who may cancel it.

        Raises ``RequestError`` (bad input, model missing) or ``GenerationCancelled``.
        """
        r = validate(request, self.settings.max_prompt_chars)
        spec = get_spec(r.model)
        avail = self.availability(spec)
        if not avail.usable:
            raise ModelUnavailable(f"{spec.title} is {avail.detail}")
        ladder = self.plans(r)
        report = on_progress or (lambda p: None)
        cancel = self._begin(owner)

        def job(plan: Plan, before: tuple[Attempt, ...]) -> GenerationResult:
            with self.manager.use(spec, plan) as pipe:
                tried = [a.to_dict() for a in before] + [Attempt(plan.label).to_dict()]
                return generate(pipe, r, self.settings.outputs_dir, report, cancel, extra_sidecar={
                    "placement": plan.label, "plan": plan.to_dict(),
                    "plan_retries": len(before), "plan_attempts": tried})

        try:
            report(Progress("loading", 0, r.steps, 0.0))
            with self._run_lock:
                if cancel.is_set():
                    raise GenerationCancelled("cancelled while waiting for the GPU")
                try:
                    return run_with_recovery(ladder, job).value
                except OutOfMemoryEverywhere as e:
                    raise DoesNotFit(str(e)) from None
        finally:
            self._end(owner, cancel)

    def cancel(self, owner: str) -> bool:
        """Ask the job of ``owner`` to stop after its current step; True if one was running."""
        with self._cancels_lock:
            event = self._cancels.get(owner)
        if event is None:
            return False
        event.set()
        return True

    def _begin(self, owner: str) -> threading.Event:
        event = threading.Event()
        with self._cancels_lock:
            self._cancels[owner] = event
        return event

    def _end(self, owner: str, event: threading.Event) -> None:
        with self._cancels_lock:
            if self._cancels.get(owner) is event:
                del self._cancels[owner]

    def describe(self) -> dict[str, Any]:
        """What is loaded and where, for the UI."""
        return {"loaded": self.manager.loaded()}
