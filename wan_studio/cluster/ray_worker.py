"""The GPU worker that runs inside a Ray actor, one per GPU on any node of the cluster.

A plain class: ``ray_backend`` wraps it with ``ray.remote`` (threaded, so ``cancel``, ``heartbeat``
and peers' ``forward`` calls are served while a job runs). Jobs run through this GPU's
``WorkerRuntime`` (the same job path as the local workers); what is Ray's own plugs in as hooks:
the split twin of a split job, and output files travelling back as bytes in the final event, so the
head's outputs folder gets them whatever the worker's operating system. It also serves the peer side
of split jobs and reports its GPU samples with every heartbeat.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.cluster.holder import EXPERT_ROLE, Keep, PipelineHolder, expert_variant, spec_for
from wan_studio.cluster.runtime import JobHooks, RuntimeConfig, WorkerRuntime
from wan_studio.cluster.split import ExpertHost, Peer, PeerLost, SplitStats, SplitTransformer, twin_with
from wan_studio.gpu.telemetry import GpuSample, local_host, open_telemetry

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled", "lost")


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

    def __init__(self, name: str, config: RuntimeConfig) -> None:
        from wan_studio.bootstrap import bootstrap

        bootstrap()  # the actor's process: Ray set its device mask; nothing has imported diffusers yet
        import torch

        from wan_studio.engine.warmup import start_compile_pool

        # Inductor's compile processes start while this actor imports and loads (see there).
        start_compile_pool("cuda" if torch.cuda.is_available() else "cpu", config.speed, config.compile_warmup)
        self.name = name
        self.gpu_lock = threading.Lock()  # one forward pass at a time on this GPU, own jobs and peers'
        self.telemetry = config.telemetry_factory() if config.telemetry_factory else open_telemetry(
            host=config.host_name or local_host())
        self.gpu_ids = self._gpu_ids()
        # Kept on this node across actor restarts: a restarted actor resumes a long clip and finds the
        # files an earlier attempt of a job finished (the job's claimed outputs); ratios calibrated on
        # this node's weights stay here too, since the head's folders may not exist on this PC.
        self._node_dir = node_dir_of(config)
        config = dataclasses.replace(config, calibration_dir=config.calibration_dir
                                     or str(self._node_dir / ".calibration"))
        from wan_studio.cluster.writer import BackgroundWriter

        # Its mp4 writes run on a thread of their own: the GPU takes the next job when a decode ends.
        self.runtime = WorkerRuntime(name, config, samples=self.own_samples, host=self.telemetry.host,
                                     writer=BackgroundWriter(before=config.before_write))
        self.manager = self.runtime.manager
        self.pipes = PipelineHolder(self.manager)
        self.expert_host = ExpertHost(self.gpu_lock)
        self._cancels: dict[str, threading.Event] = {}
        self._job: str | None = None
        self._scratch = Path(tempfile.mkdtemp(prefix="wan-worker-"))

    @staticmethod
    def _gpu_ids() -> list[int]:
        try:
            import ray

            return [int(i) for i in ray.get_gpu_ids()]
        except Exception:  # noqa: BLE001 - outside Ray (unit use): no assigned GPU
            return []

    @property
    def host(self) -> str:
        """The name this worker's samples, sidecars and thermal guard use."""
        return self.runtime.host

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
        return {"samples": samples, "loaded": self.runtime.loaded(), "job": self._job, "pid": os.getpid()}

    def unload(self) -> dict[str, Any]:
        """Free the models nobody uses on this GPU (see ``WorkerRuntime.unload``)."""
        return self.runtime.unload()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` after its current step; True when this worker runs it."""
        event = self._cancels.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def _peer_plan(self, model_key: str, work: dict[str, Any]) -> Any:
        from wan_studio.memory.plan import Workload

        return self.runtime.ladder(spec_for(model_key), Workload(**work))[0]

    def prepare(self, model_key: str, work: dict[str, Any]) -> list[str]:
        """Load ``model_key`` (``key`` or ``key@high``/``key@low``) for a peer's job of size ``work``
        (a ``Workload`` as a dict) ahead of its first call."""
        with self.pipes.borrow(spec_for(model_key), self._peer_plan(model_key, work)):
            pass
        return self.runtime.loaded()

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
        """Run one job; yields the runtime's messages (``started``, ``progress``…, ``free`` when its
        GPU part ended and its mp4 is being written, then one terminal message; ``done`` carries the
        files as ``{relative path: bytes}``). After ``free`` this GPU may run the next job (a call
        of its own) while this one's stream waits for its write.

        ``split`` is ``None`` or ``{"mode": "cfg"|"experts", "peer": handle, "peer_name": str,
        "keep": "high"|"low"}``; ``image`` carries the start image's bytes from the head; ``extra`` is
        added to the job's sidecar (notes made at submission, such as VRAM warnings).
        """
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        cancel = self._cancels[job_id] = threading.Event()
        self._job = job_id
        thread = threading.Thread(target=self._job_thread, args=(job_id, request, split, image, events, cancel,
                                                                 extra or {}), name=f"job-{job_id}", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                if event["ev"] == "free" and self._job == job_id:
                    self._job = None
                yield event
                if event["ev"] in TERMINAL:
                    break
        finally:
            thread.join(timeout=5)
            self._cancels.pop(job_id, None)
            if self._job == job_id:
                self._job = None

    def _job_thread(self, job_id: str, request: dict[str, Any], split: dict[str, Any] | None,
                    image: bytes | None, events: queue.Queue[dict[str, Any]], cancel: threading.Event,
                    extra: dict[str, Any]) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._scratch))
        try:
            if image is not None:
                path = scratch / ("start" + Path(request.get("image") or "start.png").suffix)
                path.write_bytes(image)
                request = {**request, "image": str(path)}
            hooks = JobHooks(outputs_dir=node_outputs(self._node_dir), on_done=self._ship, lost_on=(PeerLost,))
            if split:
                self._split_hooks(hooks, job_id, request, split)
            self.runtime.run_job(job_id, request, cancel, events.put, extra, hooks)
        except Exception as e:  # noqa: BLE001 - reported to the head as the job's failure
            log.exception("job %s failed on %s", job_id, self.name)
            events.put({"ev": "failed", "job_id": job_id, "error": f"{type(e).__name__}: {e}"})
        finally:
            if split:
                split["peer"].close_session.remote(job_id)
            shutil.rmtree(scratch, ignore_errors=True)

    def _ship(self, video: Path, sidecar: Path) -> dict[str, Any]:
        """The ``done`` message's files, relative to this node's outputs; they leave this node."""
        out = node_outputs(self._node_dir)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in (video, sidecar)}
        for p in (video, sidecar):
            p.unlink(missing_ok=True)
        return {"files": files}

    def _split_hooks(self, hooks: JobHooks, job_id: str, request: dict[str, Any], split: dict[str, Any]) -> None:
        """Plug a split job into ``hooks``: this worker's expert, the twin, the peer loading meanwhile."""
        from wan_studio.engine.request import GenerationRequest
        from wan_studio.memory.plan import Workload

        spec = get_spec(request["model"])
        keep: Keep | None = split.get("keep") if split["mode"] == "experts" else None
        split["work"] = dataclasses.asdict(Workload.from_request(GenerationRequest.from_dict(request)))
        split["peer_key"] = expert_variant(spec, _other(keep)).key if keep else spec.key
        split["peer"].prepare.remote(split["peer_key"], split["work"])  # the peer loads meanwhile
        stats = SplitStats(split["mode"], split["peer_name"])

        record: dict[str, Any] = {}  # the sidecar's "split", written from this dict

        def wrap(pipe: Any, sidecar: dict[str, Any]) -> Any:
            sidecar["split"] = record
            record.update(stats.as_dict())
            return nullcontext(self._split_runner(pipe, spec, job_id, split, stats))

        def between(step: int) -> None:
            record.update(stats.as_dict())

        hooks.variant = lambda s: expert_variant(s, keep)
        hooks.borrow = self.pipes.borrow
        hooks.wrap = wrap
        hooks.between = between

    def _split_runner(self, pipe: Any, spec: ModelSpec, job_id: str, split: dict[str, Any],
                      stats: SplitStats) -> Any:
        """The pipeline twin whose transformers are split stand-ins for this job."""
        mode, keep = split["mode"], split.get("keep")
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
        return twin_with(pipe, **swapped)


def node_dir_of(config: RuntimeConfig) -> Path:
    """The folder this PC's workers keep their jobs' files in (see ``RuntimeConfig.node_dir``)."""
    return Path(config.node_dir) if config.node_dir else Path(tempfile.gettempdir()) / "wan-studio"


def node_outputs(node_dir: Path) -> Path:
    """Where jobs run on a PC write their outputs (and keep their work folders) before the files
    travel to the head."""
    return node_dir / "out"


def _other(keep: Keep | None) -> Keep | None:
    return {"high": "low", "low": "high"}.get(keep) if keep else None  # type: ignore[return-value]
