"""Wiring: builds the catalog view, model manager and presets once, and runs jobs for the UI/API."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog import loading
from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn, generate
from wan_studio.engine.request import GenerationRequest, GenerationResult, RequestError, validate
from wan_studio.accounts import Accounts
from wan_studio.engine.video_io import join_clips
from wan_studio.gpu import TelemetrySampler, ThermalGuard, ThermalLimits, ThermalSession, check_vram, make_sampler
from wan_studio.limits import UserLimits, check_job_cost
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairResult:
    """A scene clip and a talking clip, and their join when asked for."""

    scene: GenerationResult
    talk: GenerationResult
    joined: Path | None


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
    telemetry: TelemetrySampler | None = None
    thermal: ThermalGuard | None = None
    accounts: Accounts | None = None
    limits: UserLimits = field(default_factory=UserLimits)
    hardware: Hardware = field(default_factory=Hardware)
    memory_limits: Limits = field(default_factory=Limits)

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None,
               telemetry: TelemetrySampler | None = None, hardware: Hardware | None = None) -> Studio:
        """Build every service from ``settings``; ``telemetry`` replaces the NVML sampler and
        ``hardware`` the detected machine (tests). The hardware is read once, at start.

        The sampler is started here; ``close()`` stops it.
        """
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        hardware = hardware or hardware_mod.detect()
        memory_limits = Limits(allow_fp8=settings.allow_fp8, allow_8bit=settings.allow_8bit)
        budget = int(hardware.host_total_bytes * memory_limits.host_fraction) - HOST_OVERHEAD_BYTES
        manager = manager or ModelManager(FolderLoader(settings.models_dir), budget_bytes=max(budget, 0))
        telemetry = (telemetry or make_sampler(interval_s=settings.telemetry_interval_s)).start()
        limits = ThermalLimits(pause_c=settings.thermal_pause_c, resume_c=settings.thermal_resume_c,
                               enabled=settings.thermal_guard, poll_s=telemetry.interval_s,
                               max_age_s=max(10.0, 5 * telemetry.interval_s))
        return cls(settings=settings, manager=manager, presets=load_presets(), telemetry=telemetry,
                   thermal=ThermalGuard(telemetry.latest, limits),
                   accounts=Accounts(settings.accounts_file) if settings.accounts_file else None,
                   limits=user_limits(settings), hardware=hardware, memory_limits=memory_limits)

    def plans(self, request: GenerationRequest) -> list[Plan]:
        """The memory plans for a validated request, chosen first, lighter fallbacks after."""
        try:
            return plan_ladder(get_spec(request.model), Workload.from_request(request), self.hardware,
                               self.memory_limits)
        except NoPlanFits as e:
            raise DoesNotFit(str(e)) from None

    def unload_models(self, user: str | None = None) -> str:
        """Free every model nobody is using (admins only); a line for the UI."""
        if not self.is_admin(user):
            return "Only an admin can unload models."
        dropped = self.manager.unload_all()
        busy = self.manager.loaded()
        text = f"Unloaded {len(dropped)} component(s)." if dropped else "Nothing to unload."
        return text + (f" In use, kept: {', '.join(busy)}." if busy else "")

    def is_admin(self, user: str | None) -> bool:
        """Whether ``user`` may unload models and act on other people's jobs.

        With an accounts file its roles decide. Without one, the app on loopback belongs to the
        person at the machine (admin); once shared, nobody is admin, so a leaked link or password
        cannot unload models or touch other jobs.
        """
        if self.accounts is not None:
            return self.accounts.is_admin(user)
        return not self.settings.shared

    def close(self) -> None:
        """Stop background work (the GPU sampler)."""
        if self.telemetry is not None:
            self.telemetry.stop()

    def vram_need_bytes(self, request: GenerationRequest) -> int:
        """Bytes of GPU memory ``request`` needs on GPU 0: the planner's predicted peak of the chosen
        plan. Where no plan uses GPU 0 (torch sees no GPU although telemetry does, or nothing fits
        and the run will refuse with the reason), the largest component plus a quarter."""
        try:
            need = dict(self.plans(validate(request, self.settings.max_prompt_chars))[0].peak_vram).get("cuda:0")
        except RequestError:
            need = None
        if need is None:
            return int(max(c.bytes for c in get_spec(request.model).components) * 1.25)
        return need

    def vram_warnings(self, request: GenerationRequest) -> list[str]:
        """Sentences for the user when the job would not fit the GPU's memory available now."""
        if self.telemetry is None or get_spec(request.model).is_demo:
            return []  # the demo runs on the CPU
        check = check_vram(self.vram_need_bytes(request), self.telemetry.latest(self.telemetry.host), index=0)
        return [check.message] if check is not None and not check.fits else []

    def _thermal_session(self, total_steps: int, report: ProgressFn, t0: float,
                         cancel: threading.Event) -> ThermalSession | None:
        if self.thermal is None or self.telemetry is None or not self.telemetry.has_local_gpus:
            return None

        def note(step: int, text: str) -> None:
            report(Progress("paused", step, total_steps, time.perf_counter() - t0, note=text))

        # Every local GPU is watched (the manager may spread a model over all of them); GPUs of other
        # hosts run their own jobs and their own guards.
        return self.thermal.session(self.telemetry.host, on_note=note, cancel=cancel)

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
        user: str | None = None,
    ) -> GenerationResult:
        """Validate and run ``request`` to completion; ``owner`` is who may cancel it, ``user`` the
        logged-in name (per-user limits apply to non-admins).

        Raises ``RequestError`` (bad input, model missing) or ``GenerationCancelled``. Between steps
        the thermal guard may hold the job while a local GPU cools (reported as stage ``paused``);
        pauses and VRAM warnings are recorded in the sidecar.
        """
        r = validate(request, self.settings.max_prompt_chars)
        check_job_cost(r, self.limits, self.is_admin(user))
        spec = get_spec(r.model)
        avail = self.availability(spec)
        if not avail.usable:
            raise ModelUnavailable(f"{spec.title} is {avail.detail}")
        ladder = self.plans(r)
        report = on_progress or (lambda p: None)
        cancel = self._begin(owner)
        extra: dict[str, Any] = {}
        for warning in self.vram_warnings(r):
            log.warning("VRAM: %s", warning)
            extra.setdefault("vram_warnings", []).append(warning)

        def job(plan: Plan, before: tuple[Attempt, ...]) -> GenerationResult:
            with self.manager.use(spec, plan) as pipe:
                tried = [a.to_dict() for a in before] + [Attempt(plan.label).to_dict()]
                guard = self._thermal_session(r.steps, report, time.perf_counter(), cancel)
                if guard is not None:
                    extra["thermal_pauses"] = guard.records
                return generate(pipe, r, self.settings.outputs_dir, report, cancel, between_steps=guard,
                                extra_sidecar={"placement": plan.label, "plan": plan.to_dict(),
                                               "plan_retries": len(before), "plan_attempts": tried, **extra})

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

    def run_scene_and_talk(
        self,
        scene: GenerationRequest,
        talk: GenerationRequest,
        join: bool,
        owner: str = "local",
        on_progress: Callable[[str, Progress], None] | None = None,
    ) -> PairResult:
        """The intermediate workflow: a scene clip, then a talking clip, optionally joined.

        Both requests are validated before either runs, so a bad audio file is refused before
        minutes of scene generation. ``on_progress(part, progress)`` names the part running
        ("scene" or "talk"). The two run one after the other in this process.
        """
        validate(scene, self.settings.max_prompt_chars)
        validate(talk, self.settings.max_prompt_chars)
        report = on_progress or (lambda part, p: None)
        first = self.run(scene, owner, lambda p: report("scene", p))
        second = self.run(talk, owner, lambda p: report("talk", p))
        joined = None
        if join:
            out = second.video_path.with_name(second.video_path.stem + "-joined.mp4")
            joined = join_clips([first.video_path, second.video_path], out, first.request.fps or 24)
        return PairResult(first, second, joined)

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


def user_limits(settings: Settings) -> UserLimits:
    """Limits from flags; when the app is shared, unset ones take the sharing defaults."""
    base = UserLimits.for_sharing() if settings.shared else UserLimits()
    return UserLimits(
        max_job_cost=settings.max_job_cost if settings.max_job_cost is not None else base.max_job_cost,
        max_queued_jobs=settings.max_queued_jobs if settings.max_queued_jobs is not None else base.max_queued_jobs,
    )
