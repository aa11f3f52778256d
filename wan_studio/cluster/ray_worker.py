"""The GPU worker that runs inside a Ray actor, one per GPU on any node of the cluster.

A plain class: ``ray_backend`` wraps it with ``ray.remote`` (threaded, so ``cancel``, ``heartbeat``
and peers' ``forward`` calls are served while a job runs). It owns this GPU's model manager, runs
jobs through ``engine.generate`` with this GPU's thermal guard, serves the peer side of split jobs,
and reports its GPU samples with every heartbeat. Output files travel back as bytes in the final
event, so the head's outputs folder gets them whatever the worker's operating system.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.cluster.holder import EXPERT_ROLE, Keep, PipelineHolder, expert_variant, spec_for
from wan_studio.cluster.split import ExpertHost, Peer, PeerLost, SplitStats, SplitTransformer, twin_with
from wan_studio.gpu.telemetry import GpuSample, GpuTelemetry, local_host, open_telemetry
from wan_studio.gpu.thermal import ThermalGuard, ThermalLimits

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class WorkerOptions:
    """How every worker of a cluster is set up (sent to each actor once, so it must pickle).

    ``tiny_models``: build every model as a tiny random one (tests and CPU demos);
    ``telemetry_factory``: makes the GPU source (a fake in tests; NVML otherwise);
    ``host_name``: the name samples and outputs carry (default: the machine's);
    thermal limits in °C and seconds, as ``ThermalLimits``.
    """

    models_dir: str = "models"
    tiny_models: bool = False
    telemetry_factory: Callable[[], GpuTelemetry] | None = None
    host_name: str | None = None
    thermal_enabled: bool = True
    thermal_pause_c: float = 83.0
    thermal_resume_c: float = 75.0
    thermal_poll_s: float = 1.0
    loras_dir: str = "loras"


def _hardware(options: WorkerOptions) -> Any:
    """This worker's GPU (Ray shows it only the one it was given) and RAM, for the planner. Tiny
    models are planned as if memory were plentiful: their real sizes are meaningless."""
    from wan_studio.memory import hardware

    if options.tiny_models:
        return hardware.Hardware((), 1024 * hardware.GIB, 1024 * hardware.GIB)
    return hardware.detect()


def make_manager(options: WorkerOptions) -> Any:
    """This worker's model manager: tiny random parts (tests) or the models folder."""
    from wan_studio.memory.loaders import TinyLoader
    from wan_studio.memory.manager import ModelManager, default_loader

    from wan_studio.engine.accel import plan_applier

    return ModelManager(TinyLoader() if options.tiny_models else default_loader(Path(options.models_dir)),
                        apply=plan_applier())


class _RayPeer:
    """A ``Peer`` over a Ray actor handle of another ``GpuWorker``."""

    def __init__(self, handle: Any, name: str, job_id: str, model_key: str, work: dict[str, Any]) -> None:
        self.handle, self.name, self.job_id, self.model_key, self.work = handle, name, job_id, model_key, work

    def forward(self, role: str, contexts: list[str], streamed: dict[str, Any],
                templates: dict[str, dict[str, Any]]) -> Any:
        ref = self.handle.forward.remote(self.job_id, self.model_key, self.work, role, contexts, streamed, templates)
        return _RefFuture(ref)


class _RefFuture:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> dict[str, Any]:
        import ray

        return ray.get(self.ref)


class GpuWorker:
    """One GPU of the cluster (see the module docstring). ``name`` is how the head calls it."""

    def __init__(self, name: str, options: WorkerOptions) -> None:
        from wan_studio.bootstrap import bootstrap

        bootstrap()  # the actor's process: Ray set its device mask; nothing has imported diffusers yet
        self.name = name
        self.options = options
        self.gpu_lock = threading.Lock()  # one forward pass at a time on this GPU, own jobs and peers'
        self.manager = make_manager(options)
        self.hardware = _hardware(options)
        self.pipes = PipelineHolder(self.manager)
        self.expert_host = ExpertHost(self.gpu_lock)
        self._cancels: dict[str, threading.Event] = {}
        self._job: str | None = None
        self._out = Path(tempfile.mkdtemp(prefix="wan-worker-"))
        self.telemetry = options.telemetry_factory() if options.telemetry_factory else open_telemetry(
            host=options.host_name or local_host())
        self.host = self.telemetry.host  # samples, sidecars and the thermal guard agree on the name
        self.gpu_ids = self._gpu_ids()
        limits = ThermalLimits(pause_c=options.thermal_pause_c, resume_c=options.thermal_resume_c,
                               enabled=options.thermal_enabled, poll_s=options.thermal_poll_s,
                               max_age_s=max(10.0, 5 * options.thermal_poll_s))
        self.thermal = ThermalGuard(self.own_samples, limits)

    @staticmethod
    def _gpu_ids() -> list[int]:
        try:
            import ray

            return [int(i) for i in ray.get_gpu_ids()]
        except Exception:  # noqa: BLE001 - outside Ray (unit use): no assigned GPU
            return []

    def own_samples(self) -> list[GpuSample]:
        """Samples of this worker's GPU (every GPU of the source when Ray assigned none)."""
        samples = self.telemetry.sample()
        return [s for s in samples if not self.gpu_ids or s.index in self.gpu_ids]

    def hello(self) -> dict[str, Any]:
        """Who and where this worker is: pid, host, device text."""
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        slot = f" (GPU {self.gpu_ids[0]})" if self.gpu_ids else ""
        return {"pid": os.getpid(), "host": self.host, "device": f"{device}{slot} on {self.host}"}

    def heartbeat(self) -> dict[str, Any]:
        """Samples of this GPU (as dicts), loaded models, the job running (or ``None``)."""
        try:
            samples = [s.to_dict() for s in self.own_samples()]
        except Exception as e:  # noqa: BLE001 - a driver hiccup must not look like a dead worker
            log.warning("GPU sampling failed on %s: %s", self.name, e)
            samples = []
        return {"samples": samples, "loaded": list(self.manager.loaded()), "job": self._job, "pid": os.getpid()}

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` after its current step; True when this worker runs it."""
        event = self._cancels.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def _peer_plan(self, model_key: str, work: dict[str, Any]) -> Any:
        from wan_studio.memory.plan import Workload

        return self._ladder(spec_for(model_key), Workload(**work))[0]

    def prepare(self, model_key: str, work: dict[str, Any]) -> list[str]:
        """Load ``model_key`` (``key`` or ``key@high``/``key@low``) for a peer's job of size ``work``
        (a ``Workload`` as a dict) ahead of its first call."""
        with self.pipes.borrow(spec_for(model_key), self._peer_plan(model_key, work)):
            pass
        return list(self.manager.loaded())

    def forward(self, job_id: str, model_key: str, work: dict[str, Any], role: str, contexts: list[str],
                streamed: dict[str, Any], templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Serve one step of a peer's split job (see ``split.ExpertHost.forward``)."""
        with self.pipes.borrow(spec_for(model_key), lambda: self._peer_plan(model_key, work)) as pipe:
            module = getattr(pipe, role)
            if module is None or isinstance(module, SplitTransformer):
                raise RuntimeError(f"{self.name} does not hold {role} of {model_key}")
            return self.expert_host.forward(module, job_id, role, contexts, streamed, templates)

    def close_session(self, job_id: str) -> None:
        """Forget a peer job's stored arguments."""
        self.expert_host.close(job_id)

    def run(self, job_id: str, request: dict[str, Any], split: dict[str, Any] | None = None,
            image: bytes | None = None, extra: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run one job; yields event dicts (``started``, ``progress``…, then one terminal event).

        ``split`` is ``None`` or ``{"mode": "cfg"|"experts", "peer": handle, "peer_name": str,
        "keep": "high"|"low"}``; ``image`` carries the start image's bytes from the head; ``extra`` is
        added to the job's sidecar (notes made at submission, such as VRAM warnings).
        """
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        cancel = self._cancels[job_id] = threading.Event()
        self._job = job_id
        thread = threading.Thread(target=self._job_thread, args=(job_id, request, split, image, events, cancel, extra or {}),
                                  name=f"job-{job_id}", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                yield event
                if event["kind"] in TERMINAL:
                    break
        finally:
            thread.join(timeout=5)
            self._cancels.pop(job_id, None)
            self._job = None

    def _job_thread(self, job_id: str, request: dict[str, Any], split: dict[str, Any] | None,
                    image: bytes | None, events: queue.Queue[dict[str, Any]], cancel: threading.Event,
                    extra: dict[str, Any]) -> None:
        from wan_studio.engine.generate import GenerationCancelled
        from wan_studio.engine.request import GenerationRequest

        scratch = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._out))
        try:
            r = GenerationRequest.from_dict(request)
            if image is not None:
                path = scratch / ("start" + Path(r.image or "start.png").suffix)
                path.write_bytes(image)
                r = dataclasses.replace(r, image=str(path))
            events.put({"kind": "started"})
            result = self._generate(job_id, r, split, scratch, events, cancel, extra)
            events.put({"kind": "done", "files": {
                p.relative_to(scratch / "out").as_posix(): p.read_bytes()
                for p in (result.video_path, result.sidecar_path)}})
            shutil.rmtree(self._work_dir(job_id), ignore_errors=True)
        except GenerationCancelled as e:
            events.put({"kind": "cancelled", "error": str(e)})
        except PeerLost as e:
            events.put({"kind": "lost", "error": str(e)})
        except Exception as e:  # noqa: BLE001 - reported to the head as the job's failure
            log.exception("job %s failed on %s", job_id, self.name)
            events.put({"kind": "failed", "error": f"{type(e).__name__}: {e}"})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _ladder(self, spec: ModelSpec, work: Any, overrides: Any = None) -> list[Any]:
        """Memory plans for ``spec`` on this worker's GPU, chosen first, lighter fallbacks after."""
        from wan_studio.memory.planner import plan_ladder

        return plan_ladder(spec, work, self.hardware, overrides=overrides)

    @staticmethod
    def _work_dir(job_id: str) -> Path:
        """Finished long-clip windows of ``job_id`` on this node: outside the actor's own temporary
        folder, so a restarted actor on the same node resumes the clip."""
        from wan_studio.engine.job import work_dir_of

        return work_dir_of(Path(tempfile.gettempdir()) / "wan-studio", job_id)

    def _generate(self, job_id: str, r: Any, split: dict[str, Any] | None, scratch: Path,
                  events: queue.Queue[dict[str, Any]], cancel: threading.Event,
                  submitted: dict[str, Any] | None = None) -> Any:
        from wan_studio.engine.generate import Progress
        from wan_studio.memory.overrides import overrides_of
        from wan_studio.memory.plan import Workload
        from wan_studio.memory.recovery import Attempt, run_with_recovery

        spec = get_spec(r.model)
        keep: Keep | None = split.get("keep") if split and split["mode"] == "experts" else None
        mine = expert_variant(spec, keep)
        work = Workload.from_request(r)

        def report(p: Progress) -> None:
            events.put({"kind": "progress", "progress": {**dataclasses.asdict(p), "fraction": p.fraction,
                                                         "message": p.message}})

        ladder = self._ladder(mine, work, overrides_of(r))  # NoPlanFits here: the job fails with the planner's reason
        if split:
            split["work"] = dataclasses.asdict(work)
            split["peer_key"] = expert_variant(spec, _other(keep)).key if keep else spec.key
            split["peer"].prepare.remote(split["peer_key"], split["work"])  # the peer loads meanwhile
        report(Progress("loading", 0, r.steps, 0.0))

        def job(plan: Any, before: tuple[Any, ...]) -> Any:
            extra = {**(submitted or {}), "worker": self.name, "host": self.host, "placement": plan.label, "plan": plan.to_dict(),
                     "plan_attempts": [a.to_dict() for a in before] + [Attempt(plan.label).to_dict()]}
            with self.pipes.borrow(mine, plan) as pipe:
                return self._run(pipe, r, job_id, split, scratch, report, cancel, extra)

        try:
            return run_with_recovery(ladder, job).value
        finally:
            if split:
                split["peer"].close_session.remote(job_id)

    def _run(self, pipe: Any, r: Any, job_id: str, split: dict[str, Any] | None, scratch: Path,
             report: Callable[[Any], None], cancel: threading.Event, extra: dict[str, Any]) -> Any:
        """One attempt of a job on a borrowed pipeline: split stand-ins, thermal guard, LoRAs, step
        cache, overrides; a long clip keeps its windows under this node's ``.work/<job_id>``."""
        from wan_studio.cluster.runner import speed_knobs
        from wan_studio.engine.caches import MagRatios
        from wan_studio.engine.generate import Progress
        from wan_studio.engine.job import calibration_dir_of, execute
        from wan_studio.memory.overrides import overrides_of

        t0 = time.perf_counter()
        runner, stats = self._split_runner(pipe, get_spec(r.model), job_id, split) if split else (pipe, None)
        if stats is not None:
            extra["split"] = stats.as_dict()
        session = None
        if self.thermal.read():
            def note(step: int, text: str) -> None:
                report(Progress("paused", step, r.steps, time.perf_counter() - t0, note=text))
            session = self.thermal.session(self.host, on_note=note, cancel=cancel)
            extra["thermal_pauses"] = session.records

        def between(step: int) -> None:
            if stats is not None:
                extra["split"].update(stats.as_dict())  # the sidecar is written from this dict
            if session is not None:
                session(step)

        pinned = overrides_of(r)
        if pinned.to_dict():
            extra["overrides"] = pinned.to_dict()
        with speed_knobs(pipe, pinned, None, extra):
            return execute(runner, r, scratch / "out", loras_dir=Path(self.options.loras_dir),
                           work_dir=self._work_dir(job_id), ratios=MagRatios(calibration_dir_of(self._out)),
                           on_progress=report, cancel=cancel, between_steps=between, extra_sidecar=extra)

    def _split_runner(self, pipe: Any, spec: ModelSpec, job_id: str,
                      split: dict[str, Any]) -> tuple[Any, SplitStats]:
        """The pipeline twin whose transformers are split stand-ins for this job."""
        mode, keep = split["mode"], split.get("keep")
        stats = SplitStats(mode, split["peer_name"])
        peer: Peer = _RayPeer(split["peer"], split["peer_name"], job_id, split["peer_key"], split["work"])
        roles = ["transformer"] + (["transformer_2"] if spec.boundary is not None else [])
        swapped: dict[str, Any] = {}
        if mode == "cfg":
            for role in roles:
                local = getattr(pipe, role)
                swapped[role] = SplitTransformer(role, local, local, peer, {"uncond"}, stats, self.gpu_lock)
        elif mode == "experts":
            mine = EXPERT_ROLE[keep]
            local = getattr(pipe, mine)
            for role in roles:
                if role == mine:
                    swapped[role] = SplitTransformer(role, local, local, None, set(), stats, self.gpu_lock)
                else:  # the other expert has the same architecture: its config and dtype match ours
                    swapped[role] = SplitTransformer(role, local, None, peer, {"cond", "uncond"}, stats)
        else:
            raise ValueError(f"unknown split mode {mode!r}")
        return twin_with(pipe, **swapped), stats


def _other(keep: Keep | None) -> Keep | None:
    return {"high": "low", "low": "high"}.get(keep) if keep else None  # type: ignore[return-value]
