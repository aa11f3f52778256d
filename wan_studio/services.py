"""Wiring: builds the catalog view, presets, telemetry, job store, queue and executor once; runs jobs.

Generation never happens in the web process: ``run`` queues the request and waits for a worker
process to finish it. (A Studio built with an injected ``manager`` runs jobs on a thread of this
process instead — tests and embedding.)
"""

from __future__ import annotations

import dataclasses

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog import loading
from wan_studio.catalog.formats import register_found
from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.cluster.executor import Executor
from wan_studio.cluster.devices import detect_devices
from wan_studio.cluster.local import LocalExecutor, worker_devices
from wan_studio.cluster.runtime import RuntimeConfig
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn
from wan_studio.engine.request import GenerationRequest, GenerationResult, RequestError, validate
from wan_studio.jobs.access import Caller
from wan_studio.jobs.prepared import PreparedJob
from wan_studio.jobs.queue import GROUP, JobQueue
from wan_studio.jobs.recorded import RecordedSettings, settings_of_video, sidecars_of_same_video
from wan_studio.jobs.state import open_store
from wan_studio.accounts import Accounts
from wan_studio.engine.video_io import join_clips
from wan_studio.gpu import TelemetrySampler, ThermalGuard, ThermalLimits, check_vram, make_sampler
from wan_studio.limits import UserLimits, check_job_cost, check_queue_quota
from wan_studio.memory import hardware as hardware_mod
from wan_studio.memory.costs import HOST_OVERHEAD_BYTES
from wan_studio.memory.hardware import Hardware
from wan_studio.memory.loaders import FolderLoader
from wan_studio.memory.manager import ModelManager
from wan_studio.memory.plan import Limits, NoPlanFits, Plan, Workload
from wan_studio.memory.overrides import overrides_of
from wan_studio.memory.planner import plan_ladder
from wan_studio.presets import PRESETS_DIR, Preset, PresetError, read_presets
from wan_studio.settings import Settings

__all__ = ["Studio", "GenerationCancelled", "RequestError", "ModelUnavailable", "DoesNotFit", "JobFailed"]

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


class JobFailed(RuntimeError):
    """A queued job ended in ``failed``; the message is the reason the worker gave."""


@dataclass
class Studio:
    """The services one app process uses. Build with ``Studio.create(settings)``."""

    settings: Settings
    manager: ModelManager
    presets: dict[str, Preset]
    # The persistent queue; its workers own the models (``manager`` is used only when injected).
    jobs: JobQueue | None = None
    telemetry: TelemetrySampler | None = None
    thermal: ThermalGuard | None = None
    accounts: Accounts | None = None
    limits: UserLimits = field(default_factory=UserLimits)
    hardware: Hardware = field(default_factory=Hardware)
    memory_limits: Limits = field(default_factory=Limits)
    # Sentences about how the job database was opened (moved, damaged, rebuilt): console and UI.
    notices: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None,
               telemetry: TelemetrySampler | None = None, hardware: Hardware | None = None,
               presets_dir: Path | None = None, workers: LocalExecutor | None = None) -> Studio:
        """Build every service from ``settings``; ``telemetry`` replaces the NVML sampler and
        ``hardware`` the detected machine (tests). The hardware is read once, at start.

        Jobs run in worker processes (one per GPU), or — when ``manager`` is given — on a thread of
        this process with that manager. Workers start on ``start()`` (or the first job); the
        sampler starts here; ``close()`` stops both. Raises ``StoreError`` when the job database cannot be used
        (a damaged one is moved aside and rebuilt from the sidecars: ``notices`` says so).
        Presets come from ``presets_dir`` (default: the app's ``presets/``); a preset file that does
        not validate is left out and named in ``notices``. ``workers``: the local worker processes
        ``cluster.local.launch_workers`` started for these settings before the app's heavy imports
        (``app.py``); they are told here which model to prepare.
        """
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        injected = manager is not None
        hardware = hardware or hardware_mod.detect()
        memory_limits = Limits(allow_fp8=settings.allow_fp8, allow_8bit=settings.allow_8bit)
        budget = int(hardware.host_total_bytes * memory_limits.host_fraction) - HOST_OVERHEAD_BYTES
        if manager is None:
            loader = FolderLoader(settings.models_dir, settings.comfyui_dir)
            register_found(loader.sources, max(budget, 0))  # GGUF files are planned by their own size
            manager = ModelManager(loader, budget_bytes=max(budget, 0))
        telemetry = (telemetry or make_sampler(interval_s=settings.telemetry_interval_s)).start()
        limits = ThermalLimits(pause_c=settings.thermal_pause_c, resume_c=settings.thermal_resume_c,
                               enabled=settings.thermal_guard, poll_s=telemetry.interval_s,
                               max_age_s=max(10.0, 5 * telemetry.interval_s))
        presets, preset_problems = read_presets(presets_dir or PRESETS_DIR)
        if not presets:
            raise PresetError("no usable presets: " + "; ".join(preset_problems or ["the presets folder is empty"]))
        studio = cls(settings=settings, manager=manager, presets=presets, telemetry=telemetry,
                     thermal=ThermalGuard(telemetry.latest, limits),
                     accounts=Accounts(settings.accounts_file) if settings.accounts_file else None,
                     limits=user_limits(settings), hardware=hardware, memory_limits=memory_limits)
        # One configuration for every worker: planner limits, RAM share, speed, thermal, folders.
        devices = worker_devices(settings) if not injected and not settings.ray_address else ["in-process"]
        # Every local worker process holds its own models: they share this machine's RAM budget.
        config = RuntimeConfig.from_settings(settings, ram_share=len(devices))
        if injected:
            from wan_studio.cluster.inline import InlineExecutor
            from wan_studio.cluster.runtime import WorkerRuntime

            executor: Executor = InlineExecutor(WorkerRuntime(
                "in-process", config, manager=manager, hardware=hardware, samples=telemetry.latest,
                host=telemetry.host))
        elif settings.ray_address:
            # Imported only when chosen; an unreachable cluster raises ClusterUnavailable at start.
            from wan_studio.cluster.ray_backend import executor_from_settings

            executor = executor_from_settings(settings, config, on_samples=telemetry.ingest)
        else:
            # The first video should not wait for the load: each worker loads and places the
            # default preset's model at start (if the RAM allows), as its job would.
            want = prepare_fields(studio.default_preset("beginner").fields) if settings.prepare_model else None
            if workers is not None:
                workers.set_prepare(want)
                executor = workers
            else:
                executor = LocalExecutor(dataclasses.replace(config, prepare=want), devices)
        opened = open_store(settings.outputs_dir, settings.jobs_db)  # moved out of outputs, repaired
        studio.notices = [*preset_problems, *opened.notices]
        studio.jobs = JobQueue(opened.store, executor, settings.outputs_dir,
                               max_length=settings.max_queue, max_attempts=settings.max_attempts,
                               max_prompt_chars=settings.max_prompt_chars, check=studio.check_available)
        studio.jobs.disk_reserve_bytes = settings.disk_reserve_mb * 2**20
        return studio

    @property
    def queue(self) -> JobQueue:
        """The job queue (always built by ``create``)."""
        assert self.jobs is not None, "build Studio with Studio.create(settings)"
        return self.jobs

    def start(self) -> None:
        """Repair the queue after a crash and start the workers."""
        self.queue.start()

    def check_available(self, request: GenerationRequest) -> None:
        """Raise ``ModelUnavailable`` unless the request's model can be loaded now."""
        spec = get_spec(request.model)
        avail = self.availability(spec)
        if not avail.usable:
            raise ModelUnavailable(f"{spec.title} is {avail.detail}")

    def plans(self, request: GenerationRequest) -> list[Plan]:
        """The memory plans for a validated request, chosen first, lighter fallbacks after."""
        try:
            return plan_ladder(get_spec(request.model), Workload.from_request(request), self.hardware,
                               self.memory_limits, overrides_of(request))
        except NoPlanFits as e:
            raise DoesNotFit(str(e)) from None

    def unload_models(self, user: str | None = None) -> str:
        """Free every model no job uses, on every worker (admins only); one line per worker saying
        what was freed there, for the UI."""
        if not self.is_admin(user):
            return "Only an admin can unload models."
        freed = self.queue.executor.unload()
        if not freed:
            return "No worker is running; nothing to unload."
        return "\n".join(f"- {f.describe()}" for f in freed)

    def is_admin(self, user: str | None) -> bool:
        """Whether ``user`` may unload models and act on other people's jobs.

        With an accounts file its roles decide. Without one, the app on loopback belongs to the
        person at the machine (admin); once shared, nobody is admin, so a leaked link or password
        cannot unload models or touch other jobs.
        """
        if self.accounts is not None:
            return self.accounts.is_admin(user)
        return not self.settings.shared

    def live_jobs(self, session: str) -> list[Any]:
        """The queued and running jobs a browser tab or API client (``session``) submitted, in
        queue order (what its live preview panels follow)."""
        return [j for j in self.queue.store.list(("running", "queued", "paused"), limit=200) if j.owner == session]

    def preview_of(self, job: Any) -> Path | None:
        """The live preview (a JPEG of the latest step) of a running ``job``, when its worker writes it
        beside these outputs (in-process and local workers; a Ray worker on another machine does not)."""
        from wan_studio.engine.job import preview_of

        return preview_of(self.settings.outputs_dir, job.id) if job.status == "running" else None

    def preview_url(self, job: Any) -> str | None:
        """The file-route URL of ``job``'s live preview (``preview_of``; each step's picture has its
        own name), or None."""
        path = self.preview_of(job)
        return f"/gradio_api/file={path.resolve()}" if path is not None else None

    def caller(self, user: str | None, session: str) -> Caller:
        """The person behind a request: login name (None without one), session key, admin or not."""
        return Caller(user or None, session, self.is_admin(user or None))

    def submit_batch(self, requests: list[GenerationRequest], caller: Caller, batch_id: str) -> list[Any]:
        """Queue a batch for ``caller`` all or none, under the same per-user limits as ``submit``
        (each job's size; the batch counts in full against the queued-jobs quota)."""
        resolved = [self.prepare(r, caller.key, admin=caller.admin) for r in requests]
        queued = self.queue.store.count_active(user=caller.key)
        if not caller.admin and self.limits.max_queued_jobs is not None \
                and queued + len(resolved) > self.limits.max_queued_jobs:
            raise RequestError(f"this batch has {len(resolved)} jobs and you already have {queued} in the queue; "
                               f"the limit is {self.limits.max_queued_jobs} per user")
        return self.queue.submit_many(resolved, owner=caller.session, batch_id=batch_id, user=caller.key)

    def close(self) -> None:
        """Stop background work: the workers (running jobs resume at the next start), the sampler."""
        if self.jobs is not None:
            self.jobs.close()
            self.jobs.store.close()
        if self.telemetry is not None:
            self.telemetry.stop()

    def vram_need_bytes(self, request: GenerationRequest, plan: Plan | None = None) -> int:
        """Bytes of GPU memory ``request`` needs on GPU 0: the predicted peak of ``plan`` (the chosen
        one when not given). Where no plan uses GPU 0 (torch sees no GPU although telemetry does, or
        nothing fits and the run will refuse with the reason), the largest component plus a quarter."""
        try:
            plan = plan or self.plans(validate(request, self.settings.max_prompt_chars))[0]
            need = dict(plan.peak_vram).get("cuda:0")
        except RequestError:
            need = None
        if need is None:
            return int(max(c.bytes for c in get_spec(request.model).components) * 1.25)
        return need

    def vram_warnings(self, request: GenerationRequest, plan: Plan | None = None) -> list[str]:
        """Sentences for the user when the job would not fit the GPU's memory available now."""
        if self.telemetry is None or get_spec(request.model).is_demo:
            return []  # the demo runs on the CPU
        check = check_vram(self.vram_need_bytes(request, plan), self.telemetry.latest(self.telemetry.host), index=0)
        return [check.message] if check is not None and not check.fits else []

    def prepare(self, request: GenerationRequest, user: str | None = None, extra: dict[str, Any] | None = None,
                admin: bool | None = None) -> PreparedJob:
        """Check ``request`` once for ``user`` (``admin``: whether limits apply; default from the
        user): validate and resolve it, its size against the user's limits, the model's files, its
        LoRAs, and plan it on this machine. Raises ``RequestError`` (``ModelUnavailable``,
        ``DoesNotFit``) with the reason."""
        r = validate(request, self.settings.max_prompt_chars)
        check_job_cost(r, self.limits, self.is_admin(user) if admin is None else admin)
        self.check_available(r)
        if r.loras or r.fast:
            from wan_studio.engine.distill import recipe_loras
            from wan_studio.engine.lora import LoraChoice, check_choices

            # A fast job whose distill LoRAs are not downloaded is refused here, with the command.
            found = recipe_loras(r, self.settings.loras_dir) + list(r.loras or [])
            check_choices([LoraChoice.parse(x) for x in found], self.settings.loras_dir)
        plan = self.plans(r)[0]  # refuses at once (DoesNotFit) what no memory plan can run here
        warnings = tuple(self.vram_warnings(r, plan))
        for warning in warnings:
            log.warning("VRAM: %s", warning)
        return PreparedJob(r, get_spec(r.model), plan, warnings, dict(extra or {}))

    def availability(self, spec: ModelSpec) -> loading.Availability:
        """Whether ``spec`` can be loaded now, and how to get it if not."""
        return loading.availability(spec, self.settings.models_dir, self.settings.comfyui_dir)

    def models(self) -> list[loading.Availability]:
        """Availability of every model in the catalog."""
        return [self.availability(s) for s in CATALOG.values()]

    def recorded_settings(self, video: Path, caller: Caller) -> RecordedSettings:
        """The settings ``video`` was made with: from the video, else its sidecar (beside it, or the
        sidecar of one of ``caller``'s finished jobs that made exactly this file). Raises
        ``NoRecordedSettings`` in words."""
        return settings_of_video(video, sidecars_of_same_video(self.queue.store, caller, Path(video)))

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

    def submit(self, request: GenerationRequest | PreparedJob, owner: str = "local", user: str | None = None,
               priority: int = 0, extra: dict[str, Any] | None = None) -> Any:
        """Queue ``request`` (prepared here unless it already is, see ``prepare``) under the user's
        queue quota; returns the stored job. ``extra`` goes into the sidecar, e.g.
        ``{"calibrate_magcache": True}`` from the Advanced tab.

        Raises ``RequestError`` (bad input, model missing, over a limit, queue full).
        """
        prepared = request if isinstance(request, PreparedJob) else self.prepare(request, user)
        check_queue_quota(self.queue.store.count_active(user=user or owner), self.limits, self.is_admin(user))
        return self.queue.submit(prepared, owner=owner, priority=priority, user=user or owner, extra=extra)

    def run(
        self,
        request: GenerationRequest,
        owner: str = "local",
        on_progress: ProgressFn | None = None,
        user: str | None = None,
    ) -> GenerationResult:
        """Queue ``request`` (``owner`` may cancel it, ``user`` is the logged-in name: per-user limits
        apply to non-admins) and wait until a worker has made the video.

        Raises ``RequestError`` (bad input, model missing, limits, queue full), ``GenerationCancelled``
        or ``JobFailed`` (with the worker's reason). Between steps the thermal guard may hold the job
        while a GPU cools (reported as stage ``paused``); pauses and VRAM warnings are recorded in
        the sidecar.
        """
        report = on_progress or (lambda p: None)
        job = self.submit(request, owner=owner, user=user)
        def waiting(j: Any) -> None:
            if j.status in ("queued", "paused"):
                report(self.queue.progress_of(j))

        job = self.queue.wait(job.id, on_change=waiting, on_progress=report)
        if job.status == "cancelled":
            raise GenerationCancelled(job.error or "cancelled")
        if job.status != "done":
            raise JobFailed(job.error or f"the job ended as {job.status}")
        return result_of(job.outputs)

    def run_scene_and_talk(
        self,
        scene: GenerationRequest,
        talk: GenerationRequest,
        join: bool,
        owner: str = "local",
        on_progress: Callable[[str, Progress], None] | None = None,
        user: str | None = None,
    ) -> PairResult:
        """The intermediate workflow: a scene clip and a talking clip, optionally joined.

        Both requests are prepared before either is queued, so a bad audio file is refused before
        minutes of scene generation. Both jobs are queued at once: with two GPU workers they run side
        by side (one model per GPU; the queue keeps sending each model to the worker that holds it),
        with one they run one after the other. ``on_progress(part, progress)`` names the part
        ("scene" or "talk") and is called from this thread. When one part fails or is cancelled the
        other is cancelled too and the reason is raised (``JobFailed`` / ``GenerationCancelled``).
        """
        prepared = {"scene": self.prepare(scene, user), "talk": self.prepare(talk, user)}
        report = on_progress or (lambda part, p: None)
        ids: dict[str, str] = {}
        # One group: the queue cancels the other part the moment one fails or is cancelled.
        pair = {GROUP: uuid.uuid4().hex[:12]}
        try:
            for part, job in prepared.items():
                ids[part] = self.submit(job, owner=owner, user=user, extra=pair).id
            watch = self._pair_watch(ids, report)
            jobs = {part: self.queue.wait(job_id, on_change=watch) for part, job_id in ids.items()}
        except BaseException:
            for job_id in ids.values():
                if not self.queue.get(job_id).finished:
                    self.queue.cancel(job_id)
            raise
        first, second = result_of(jobs["scene"].outputs), result_of(jobs["talk"].outputs)
        joined = None
        if join:
            out = second.video_path.with_name(second.video_path.stem + "-joined.mp4")
            joined = join_clips([first.video_path, second.video_path], out, first.request.fps or 24)
        return PairResult(first, second, joined)

    def _pair_watch(self, ids: dict[str, str], report: Callable[[str, Progress], None]) -> Callable[[Any], None]:
        """An ``on_change`` for ``queue.wait`` that reports every part of a pair and raises as soon as
        one part ends without its video."""
        def watch(_changed: Any) -> None:
            jobs = {part: self.queue.get(job_id) for part, job_id in ids.items()}
            # The part that failed is the reason; the other was cancelled because of it.
            for part, job in jobs.items():
                if job.status == "failed":
                    raise JobFailed(f"{part}: {job.error or 'failed'}")
            for part, job in jobs.items():
                if job.status == "cancelled":
                    raise GenerationCancelled(f"{part}: {job.error or 'cancelled'}")
            for part, job in jobs.items():
                report(part, self.queue.progress_of(job))
        return watch

    def cancel(self, owner: str) -> bool:
        """Ask every unfinished job of ``owner`` to stop; True if there was one."""
        return self.queue.cancel_owner(owner) > 0

    def describe(self) -> dict[str, Any]:
        """What each worker has loaded, for the UI."""
        workers = self.queue.executor.workers()
        return {"loaded": {m: w.device for w in workers for m in w.loaded},
                "workers": [w.__dict__ for w in workers]}


def prepare_fields(preset: dict[str, Any]) -> dict[str, Any]:
    """What a worker prepares at start for a preset's jobs (``RuntimeConfig.prepare``): its model
    and the size and steps its plan depends on (the model's defaults where the preset is silent)."""
    spec = get_spec(preset["model"])
    w, h = spec.default_size
    return {"model": spec.key, "width": preset.get("width", w), "height": preset.get("height", h),
            "num_frames": preset.get("num_frames", spec.frames), "steps": preset.get("steps", spec.steps)}


def user_limits(settings: Settings) -> UserLimits:
    """Limits from flags; when the app is shared, unset ones take the sharing defaults."""
    base = UserLimits.for_sharing() if settings.shared else UserLimits()
    return UserLimits(
        max_job_cost=settings.max_job_cost if settings.max_job_cost is not None else base.max_job_cost,
        max_queued_jobs=settings.max_queued_jobs if settings.max_queued_jobs is not None else base.max_queued_jobs,
    )


def result_of(outputs: list[str]) -> GenerationResult:
    """Rebuild a ``GenerationResult`` from a finished job's files (mp4 + JSON sidecar)."""
    video = Path(next(o for o in outputs if o.endswith(".mp4")))
    sidecar_path = Path(next(o for o in outputs if o.endswith(".json")))
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    peak = sidecar.get("peak_vram_gib")
    return GenerationResult(video, sidecar_path, GenerationRequest.from_dict(sidecar["request"]),
                            dict(sidecar.get("timings", {})), int(peak * 2**30) if peak is not None else None)
