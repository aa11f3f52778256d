"""The one worker runtime: every executor runs its jobs through a ``WorkerRuntime``.

The in-process executor (a thread), the local worker process (a pipe) and the Ray actor (a Ray
call) are transports around it. ``RuntimeConfig`` is built once from the app's settings and pickled
to each worker; the runtime owns this worker's hardware view, model manager, plan ladder with
out-of-memory recovery, speed options, thermal guard, MagCache calibration, claimed output names
and the job sidecar. What only the Ray actor does (the split twin, shipping files back to the head)
plugs in through ``JobHooks``.

A job reports plain-dict messages through ``send``: ``started``, ``progress``*, then exactly one of
``done`` / ``failed`` / ``cancelled`` / ``lost`` (see ``executor.event_from_message``). With a
background writer, ``free`` comes between: the GPU is done and the worker takes its next job while
this one's mp4 is written; the terminal message follows from the writer thread.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.engine.compile_log import CompileLog, RunShape

Send = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ThermalConfig:
    """Pause a job between steps while a GPU is at ``pause_c`` °C until it is back at ``resume_c``;
    temperatures are read every ``interval_s`` seconds."""

    pause_c: float = 83.0
    resume_c: float = 75.0
    enabled: bool = True
    interval_s: float = 1.0


@dataclass(frozen=True)
class RuntimeConfig:
    """How every worker of this app is set up; built once from ``Settings``, pickled to workers.

    ``ram_share``: how many workers share this machine's host-RAM budget for cached models;
    ``speed``: ``engine.accel.SpeedOptions`` fields; ``cpu_threads``: torch threads of a CPU worker;
    ``tiny_models``: build every model as a tiny random one (tests, CPU demos of a cluster);
    ``calibration_dir``: where calibrated MagCache ratios are kept (default: beside the outputs);
    ``telemetry_factory`` / ``host_name``: the GPU source of a Ray worker (a fake in tests);
    ``node_dir``: the folder where a Ray worker keeps its jobs' work folders, outputs on their way to
    the head and calibrated ratios on its PC (default: ``wan-studio`` in the system temp folder;
    tests give each cluster its own, since their nodes share one machine);
    ``prepare``: the request fields (model, width, height, num_frames, steps) whose pipeline a
    worker process loads and places at start, in the background, when this machine has the RAM for
    it (``WorkerRuntime.prepare``); ``compile_cache_dir``: where torch.compile keeps its caches, so
    they last across app starts;
    ``before_write``: called on a worker process's writer thread before each background mp4 write
    (tests hold a write there to stop or kill the worker mid-write);
    ``compile_warmup``: compile the transformer's blocks on a throwaway block while a cold worker
    loads the model (``engine.warmup``): None (auto) on a CUDA GPU when the plan compiles, True also
    elsewhere (tests), False never.
    """

    models_dir: str = "models"
    comfyui_dir: str | None = None
    outputs_dir: str = "outputs"
    loras_dir: str = "loras"
    allow_fp8: bool = True
    allow_8bit: bool = False
    ram_share: int = 1
    speed: dict[str, Any] = field(default_factory=dict)
    thermal: ThermalConfig | None = None
    cpu_threads: int | None = None
    tiny_models: bool = False
    calibration_dir: str | None = None
    telemetry_factory: Callable[[], Any] | None = None
    host_name: str | None = None
    node_dir: str | None = None
    before_write: Callable[[], None] | None = None
    prepare: dict[str, Any] | None = None
    compile_cache_dir: str | None = None
    compile_warmup: bool | None = None

    @classmethod
    def from_settings(cls, settings: Any, ram_share: int = 1, **changes: Any) -> RuntimeConfig:
        """The configuration for ``settings`` (a ``wan_studio.settings.Settings``)."""
        thermal = ThermalConfig(settings.thermal_pause_c, settings.thermal_resume_c, settings.thermal_guard,
                                settings.telemetry_interval_s)
        comfy = getattr(settings, "comfyui_dir", None)
        base = cls(models_dir=str(settings.models_dir), comfyui_dir=str(comfy) if comfy else None,
                   outputs_dir=str(settings.outputs_dir),
                   loras_dir=str(settings.loras_dir), allow_fp8=settings.allow_fp8, allow_8bit=settings.allow_8bit,
                   ram_share=max(1, ram_share), speed=settings.speed.to_dict(), thermal=thermal,
                   compile_cache_dir=str(settings.state_folder / "torch-compile"))
        return dataclasses.replace(base, **changes)

    def limits(self) -> Any:
        """The planner's ``Limits`` of these settings."""
        from wan_studio.memory.plan import Limits

        return Limits(allow_fp8=self.allow_fp8, allow_8bit=self.allow_8bit)

    def ratios_dir(self) -> Path:
        """Where calibrated MagCache ratios are read and written."""
        from wan_studio.engine.job import calibration_dir_of

        return Path(self.calibration_dir) if self.calibration_dir else calibration_dir_of(Path(self.outputs_dir))


@dataclass
class JobHooks:
    """What a transport adds around one job (all optional; the Ray actor uses them).

    ``outputs_dir`` / ``work_dir``: where this job writes its files and keeps its claim and windows;
    ``variant``: the spec this worker holds for the job (one expert of an expert split);
    ``borrow(spec, plan)``: a context giving the pipeline (default ``manager.use``);
    ``wrap(pipe, sidecar)``: a context giving the pipeline to run (the split twin);
    ``between(step)``: called between steps; ``on_done(video, sidecar)``: fields added to ``done``;
    ``lost_on``: errors that mean the job was lost rather than failed (a split peer died).
    """

    outputs_dir: Path | None = None
    work_dir: Path | None = None
    variant: Callable[[ModelSpec], ModelSpec] | None = None
    borrow: Callable[[ModelSpec, Any], AbstractContextManager[Any]] | None = None
    wrap: Callable[[Any, dict[str, Any]], AbstractContextManager[Any]] | None = None
    between: Callable[[int], None] | None = None
    on_done: Callable[[Path, Path], dict[str, Any]] | None = None
    lost_on: tuple[type[BaseException], ...] = ()


def plentiful_hardware() -> Any:
    """No GPU and 1 TiB of RAM: tiny models are planned as if memory were plentiful."""
    from wan_studio.memory import hardware

    return hardware.Hardware((), 1024 * hardware.GIB, 1024 * hardware.GIB)


class WorkerRuntime:
    """One worker's models and job path (see the module docstring).

    ``manager`` / ``hardware`` replace the ones built from ``config`` (tests, an embedding app);
    ``samples`` reads this worker's GPU temperatures and ``host`` names them (default: a sampler
    of this process's GPUs when ``config.thermal`` is set); ``pins`` maps a GPU pinned by a job
    (``cuda:<i>`` as the app sees it) to the name this process uses for it. ``writer`` (a
    ``cluster.writer.BackgroundWriter``) takes each job's mp4 write off the GPU's path: the job sends
    ``free`` when its decode ends and ``done`` from the writer once its files are in place.
    """

    def __init__(self, name: str, config: RuntimeConfig, *, manager: Any = None, hardware: Any = None,
                 samples: Callable[[], Sequence[Any]] | None = None, host: str | None = None,
                 pins: dict[str, str] | None = None, writer: Any = None) -> None:
        from wan_studio.engine.caches import MagRatios
        from wan_studio.memory import hardware as hardware_mod

        self.name = name
        self.config = config
        self.outputs_dir = Path(config.outputs_dir)
        self.loras_dir = Path(config.loras_dir)
        self.hardware = hardware or (plentiful_hardware() if config.tiny_models else hardware_mod.detect())
        self.limits = config.limits()
        self.ram_budget_bytes: int | None = None  # of cached models; unknown for an injected manager
        self.manager = manager if manager is not None else self._build_manager()
        self.ratios = MagRatios(config.ratios_dir())
        self.pins = dict(pins or {})
        self.writer = writer
        # the shapes each model has run in this process: what a job will compile (its estimate)
        self.compile_log = CompileLog()
        self._sampler: Any = None
        if samples is None and config.thermal is not None and config.thermal.enabled:
            samples, host = self._local_samples(config.thermal)
        self.host = host or config.host_name or _local_host()
        self.guard = self._guard(samples, config.thermal) if samples is not None else None
        self._warmups: dict[tuple[Any, ...], Any] = {}
        self._warmups_lock = threading.Lock()

    def _build_manager(self) -> Any:
        from wan_studio.engine.accel import SpeedOptions, plan_applier
        from wan_studio.memory.costs import HOST_OVERHEAD_BYTES
        from wan_studio.memory.loaders import FolderLoader, TinyLoader
        from wan_studio.memory.manager import ModelManager

        # Every worker process holds its own models: the host-RAM budget is shared out between them.
        budget = int(self.hardware.host_total_bytes * self.limits.host_fraction) - HOST_OVERHEAD_BYTES
        self.ram_budget_bytes = max(budget // self.config.ram_share, 0)
        if self.config.tiny_models:
            loader: Any = TinyLoader()
        else:
            from wan_studio.catalog.formats import register_found

            comfy = Path(self.config.comfyui_dir) if self.config.comfyui_dir else None
            loader = FolderLoader(Path(self.config.models_dir), comfy)
            # the planner here counts GGUF files by their size (the quantisation that fits this RAM)
            register_found(loader.sources, self.ram_budget_bytes)
        return ModelManager(loader, budget_bytes=self.ram_budget_bytes,
                            apply=plan_applier(SpeedOptions(**self.config.speed)))

    def _local_samples(self, thermal: ThermalConfig) -> tuple[Callable[[], Sequence[Any]] | None, str | None]:
        """This process's own NVML sampler (None without a local GPU)."""
        from wan_studio.gpu import make_sampler

        sampler = make_sampler(interval_s=thermal.interval_s).start()
        if not sampler.has_local_gpus:
            sampler.stop()
            return None, None
        self._sampler = sampler
        return sampler.latest, sampler.host

    @staticmethod
    def _guard(samples: Callable[[], Sequence[Any]], thermal: ThermalConfig | None) -> Any:
        from wan_studio.gpu.thermal import ThermalGuard, ThermalLimits

        t = thermal or ThermalConfig()
        return ThermalGuard(samples, ThermalLimits(pause_c=t.pause_c, resume_c=t.resume_c, enabled=t.enabled,
                                                   poll_s=t.interval_s, max_age_s=max(10.0, 5 * t.interval_s)))

    def settings(self) -> dict[str, Any]:
        """The app settings this worker runs with, as its jobs' sidecars record them."""
        budget = self.ram_budget_bytes
        return {"allow_fp8": self.limits.allow_fp8, "allow_8bit": self.limits.allow_8bit,
                "attention": self.config.speed.get("attention", "auto"),
                "compile": self.config.speed.get("compile", "auto"),
                "ram_budget_gib": round(budget / 2**30, 3) if budget is not None else None}

    # --- what is loaded ------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Model keys whose pipelines this worker holds."""
        return list(self.manager.loaded())

    def unload(self) -> dict[str, Any]:
        """Free every model nobody uses; what was freed (model keys, GiB of cached weights) and kept."""
        before = self.manager.cached()
        dropped = self.manager.unload_all()
        freed = sum(before.get(k, 0) for k in dropped)
        return {"models": sorted({k[0].split("/", 1)[0] for k in dropped}), "components": len(dropped),
                "freed_gib": round(freed / 2**30, 3), "kept": self.loaded()}

    def close(self) -> None:
        """Finish the background writes, then stop this worker's temperature sampler."""
        if self.writer is not None:
            self.writer.close()
        if self._sampler is not None:
            self._sampler.stop()

    def prepare(self) -> str | None:
        """Load and place the pipeline of ``config.prepare`` as its job would (same plan), so the
        first job finds it ready; a job that comes meanwhile waits for it and reports its progress.
        Skipped when the model's weights do not fit this worker's share of the host RAM or the RAM
        free now. Returns one line saying what was done (None when nothing was asked)."""
        from wan_studio.memory import costs, hardware
        from wan_studio.memory.manager import component_key
        from wan_studio.memory.plan import Workload

        want = self.config.prepare
        if not want:
            return None
        spec = get_spec(want["model"])
        t0 = time.perf_counter()
        plan = self.ladder(spec, Workload(int(want["width"]), int(want["height"]), int(want["num_frames"]),
                                          int(want["steps"])))[0]
        need = sum(costs.stored_bytes(c.params, component_key(spec, c.name, plan)[1]) for c in spec.components)
        room = self.hardware.host_free_bytes
        if self.ram_budget_bytes is not None:
            room = min(room, self.ram_budget_bytes)
        if need > room:
            return (f"{spec.title} not prepared: its weights need {need / hardware.GIB:.1f} GiB of RAM and "
                    f"{room / hardware.GIB:.1f} GiB are free for this worker; it loads with the first job")
        # warmed as a text-to-video job, the default first job (one timestep per sample)
        work = Workload(int(want["width"]), int(want["height"]), int(want["num_frames"]), int(want["steps"]),
                        image=False)
        warm = self.warmup_for(spec, plan, work, start=True)
        with self.manager.use(spec, plan):
            pass
        note = f"prepared {spec.title} ({plan.label}) in {time.perf_counter() - t0:.1f} s"
        if warm is not None:
            record = warm.wait()
            note += f"; compile warm-up: {record}"
            if record.get("ran"):  # the model's blocks have run that shape in this process
                self.compile_log.ran(spec.key, [RunShape(work.width, work.height, work.frames)])
        return note

    # --- compile warm-up -----------------------------------------------------------------------
    def warmup_for(self, spec: ModelSpec, plan: Any, work: Any, start: bool) -> Any:
        """The compile warm-up (``engine.warmup.CompileWarmup``) of a job of ``spec`` placed by
        ``plan`` at ``work``'s size: the one under way or done for the same graph (model, the
        transformer's placement, shapes), else (``start``) a new one begun now, while the model
        loads. None when there is nothing to warm: the model's weights are placed already, the plan
        does not compile its transformer, no CUDA GPU (unless ``config.compile_warmup`` asks), or a
        model format whose configuration cannot be read before its weights."""
        from wan_studio.memory import costs
        from wan_studio.memory.estimate import can_warm_up
        from wan_studio.memory.plan import TRANSFORMERS

        tp = next((p for p in plan.placements if p.component in TRANSFORMERS), None)
        if tp is None or not can_warm_up(spec, tp) or self.config.compile_warmup is False:
            return None
        if tp.device == "cpu" and self.config.compile_warmup is not True:
            return None
        a = costs.arch(spec)
        # a timestep per token only from an image: text to video runs TI2V-5B with one per sample
        # (engine.generate.uniform_timestep)
        per_token = a.expand_timesteps and work.image
        key = (spec.key, tp.device, tp.storage, tp.offload, work.width, work.height, work.frames, per_token)
        with self._warmups_lock:
            if key in self._warmups:
                return self._warmups[key]
            if not start or spec.key in self.manager.loaded():
                return None
            made = self._new_warmup(spec, plan, tp, work, per_token)
            if made is not None:
                self._warmups[key] = made.start()
            return made

    def warmup_done(self, warm: Any) -> None:
        """A job waited for ``warm``: later jobs find the model placed and need none."""
        with self._warmups_lock:
            for key in [k for k, v in self._warmups.items() if v is warm]:
                del self._warmups[key]

    def _new_warmup(self, spec: ModelSpec, plan: Any, tp: Any, work: Any, per_token: bool) -> Any:
        from wan_studio.memory import costs

        if self.config.compile_warmup is None and not (costs.compiles(spec, tp.storage, tp.offload) and _cuda_available()):
            return None
        found = getattr(self.manager, "transformer_config", lambda _s: None)(spec)
        if found is None:
            return None
        import torch

        from wan_studio.engine.accel import SpeedOptions, transformer_offload
        from wan_studio.engine.warmup import CompileWarmup, run_throwaway, shapes_for, speed_preparer

        model_cls, config = found
        shapes = shapes_for(config, work.width, work.height, work.frames, costs.arch(spec).spatial_down, per_token)
        prepare = speed_preparer(transformer_offload(plan), plan.storage, SpeedOptions(**self.config.speed))
        return CompileWarmup(lambda: run_throwaway(model_cls, config, shapes, prepare, tp.device, torch.bfloat16))

    # --- planning ------------------------------------------------------------------------------
    def plans(self, spec: ModelSpec, request: Any) -> list[Any]:
        """Memory plans for ``request`` on this worker's hardware with the app's planner limits,
        chosen first, lighter fallbacks after. A GPU pin names the app's GPU; this process may know
        it by another name (its only GPU is ``cuda:0`` under its device mask)."""
        from wan_studio.memory.overrides import overrides_of
        from wan_studio.memory.plan import Workload

        pins = overrides_of(request)
        if pins.gpu is not None and pins.gpu in self.pins:
            pins = dataclasses.replace(pins, gpu=self.pins[pins.gpu])
        return self.ladder(spec, Workload.from_request(request), pins)

    def ladder(self, spec: ModelSpec, work: Any, pins: Any = None) -> list[Any]:
        """Memory plans for a ``Workload`` of ``spec`` (``RequestError`` with the planner's reason
        when none fits, or when ``pins`` name a GPU this worker does not have)."""
        from wan_studio.engine.request import RequestError
        from wan_studio.memory.plan import NoPlanFits
        from wan_studio.memory.planner import plan_ladder

        if pins is not None and pins.gpu is not None and pins.gpu != "cpu":
            have = [f"cuda:{g.index}" for g in self.hardware.gpus]
            if pins.gpu not in have:
                raise RequestError(f"this job is pinned to {pins.gpu}, which worker {self.name} on {self.host} "
                                   f"does not have (it has {', '.join(have) or 'no GPU'}); pin one of those "
                                   "or choose auto")
        try:
            return plan_ladder(spec, work, self.hardware, self.limits, pins)
        except NoPlanFits as e:
            raise RequestError(str(e)) from None

    # --- one job -------------------------------------------------------------------------------
    def run_job(self, job_id: str, request: Any, cancel: threading.Event, send: Send,
                extra: dict[str, Any] | None = None, hooks: JobHooks | None = None) -> None:
        """Run one job (a ``GenerationRequest`` or its dict) and send exactly one terminal message
        for it; never raises."""
        from wan_studio.cluster.job_path import JobPath

        JobPath(self, job_id, request, cancel, send, extra or {}, hooks or JobHooks()).run()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _local_host() -> str:
    from wan_studio.gpu.telemetry import local_host

    return local_host()


def borrowed(manager: Any, spec: ModelSpec, plan: Any) -> AbstractContextManager[Any]:
    """The default ``JobHooks.borrow``: the manager lends the pipeline placed with ``plan``."""
    return manager.use(spec, plan)


def unwrapped(pipe: Any, sidecar: dict[str, Any]) -> AbstractContextManager[Any]:
    """The default ``JobHooks.wrap``: the pipeline as it is."""
    return nullcontext(pipe)
