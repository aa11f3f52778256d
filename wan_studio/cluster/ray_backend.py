"""The Ray executor: one ``GpuWorker`` actor per GPU on every node of a Ray cluster.

Ray is imported only when this executor is built; a missing package or an unreachable cluster is a
``ClusterUnavailable`` whose message says what to do. A monitor thread keeps one actor per GPU of
every live node (recreating actors whose process or node died, once the node is back), collects
each worker's GPU samples with its heartbeat and hands them to ``on_samples`` (the app's sampler
``ingest``). Each submitted job is driven by one thread that reads the worker's event stream; when
its decode ends (``free``) the worker is idle again while the actor writes the mp4, and the stream
still brings the job's ending. When the worker dies mid-job or mid-write the job ends with ``lost``
and the queue requeues it elsewhere.

Split jobs (``split``): ``"cfg"`` borrows a second idle worker for a guided job, which computes the
unconditional branch every step; ``"experts"`` keeps the high-noise expert of a two-expert model on
one worker and the low-noise expert on another, and any job of that model submitted to either runs
its steps on both, so two such jobs overlap; ``"auto"`` does the expert split for two-expert models
and the CFG split otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from wan_studio.catalog.specs import get_spec
from wan_studio.cluster.executor import (EventSink, Executor, Freed, JobEvent, WorkerGone, WorkerInfo,
                                         WorkerState, event_from_message)
from wan_studio.cluster.ray_worker import GpuWorker
from wan_studio.cluster.runtime import RuntimeConfig, ThermalConfig
from wan_studio.engine.request import GenerationRequest
from wan_studio.gpu.telemetry import GpuSample

log = logging.getLogger(__name__)

SplitMode = Literal["off", "cfg", "experts", "auto"]
SamplesSink = Callable[[list[GpuSample]], Any]
NAMESPACE = "wan-studio"


class ClusterUnavailable(RuntimeError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


def import_ray() -> Any:
    """The ``ray`` module, or ``ClusterUnavailable`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable(
            "--ray-address needs Ray, which is not installed. Install the same version on every PC: "
            "pip install -r requirements-cluster.txt, then start the cluster "
            "as docs/CLUSTER.md describes."
        ) from None
    return ray


def connect(address: str, ship_code: bool = True) -> Any:
    """Join the Ray cluster at ``address`` (``auto`` or ``HOST:PORT``); returns the ray module.

    With ``ship_code`` the head's ``wan_studio`` package is sent to every worker, so all PCs run
    the same code; each PC still needs the same Python, Ray, torch and diffusers versions.
    """
    ray = import_ray()
    if address != "auto":
        _reachable(address)
    if ray.is_initialized():
        return ray
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[1])]} if ship_code else None
    try:
        ray.init(address=address, namespace=NAMESPACE, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        hint = ("no cluster was found on this PC; start it first with: ray start --head --port=6379"
                if address == "auto" else
                f"check that 'ray start --head --port={address.rpartition(':')[2]}' runs on {address.rpartition(':')[0]}, "
                "that this PC can reach it (firewall: docs/CLUSTER.md lists the ports), and that both PCs "
                "run the same Ray and Python versions")
        raise ClusterUnavailable(f"Could not join the Ray cluster at {address!r}: {e}. Fix: {hint}.") from e
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at ``address``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnavailable(f"--ray-address must be 'auto' or HOST:PORT (e.g. 192.168.10.1:6379), not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterUnavailable(
            f"Nothing answers at {address} ({e.strerror or e}). Start the head with "
            f"'ray start --head --port={port}' on {host}, or check the address and the firewall "
            "(docs/CLUSTER.md lists the ports)."
        ) from None


@dataclass
class _Worker:
    """The head's view of one worker actor."""

    name: str
    node_id: str
    handle: Any
    state: WorkerState = "starting"
    job_id: str | None = None
    helping: str | None = None  # job id of another worker's split job this one serves
    loaded: tuple[str, ...] = ()
    restarts: int = 0
    pid: int | None = None
    device: str = "GPU (starting)"
    last_exit: str | None = None
    pending: Any = None  # heartbeat in flight

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.name, self.device, self.state, self.pid, self.job_id or self.helping,
                          self.loaded, self.restarts, self.last_exit)


class RayExecutor(Executor):
    """Runs jobs on Ray actors, one per GPU of every node (see the module docstring).

    ``outputs_dir`` is the head's folder the finished mp4 + sidecar are written to;
    ``heartbeat_s`` seconds between heartbeats (GPU samples, liveness).
    """

    def __init__(self, address: str, outputs_dir: Path, options: RuntimeConfig | None = None,
                 split: SplitMode = "off", on_samples: SamplesSink | None = None,
                 heartbeat_s: float = 1.0, ship_code: bool = True) -> None:
        if split not in ("off", "cfg", "experts", "auto"):
            raise ValueError(f"unknown split mode {split!r}; choose off, cfg, experts or auto")
        self.address = address
        self.outputs_dir = Path(outputs_dir)
        self.options = options or RuntimeConfig(outputs_dir=str(outputs_dir))
        self.split = split
        self.on_samples = on_samples
        self.heartbeat_s = heartbeat_s
        self.ship_code = ship_code
        self._ray: Any = None
        self._sink: EventSink = lambda e: None
        self._workers: dict[str, _Worker] = {}
        self._restarts: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._jobs: dict[str, threading.Thread] = {}
        self.bytes_per_step: dict[str, int] = {}  # job id -> network bytes per split step

    # -- Executor interface ----------------------------------------------------------------
    def start(self, on_event: EventSink) -> None:
        """Join the cluster, create the workers and start the monitor; events go to ``on_event``."""
        self._sink = on_event
        self._ray = connect(self.address, self.ship_code)
        self._remote_cls = self._ray.remote(GpuWorker)
        self.reconcile()
        self._monitor = threading.Thread(target=self._monitor_loop, name="ray-monitor", daemon=True)
        self._monitor.start()

    def idle_workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [w.info() for w in self._sorted() if w.state == "idle" and not w.helping]

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [w.info() for w in self._sorted()]

    def submit(self, worker: str, job_id: str, request: GenerationRequest,
               extra: dict[str, Any] | None = None) -> None:
        # The start image travels as bytes: the worker's PC cannot read the head's paths.
        image = Path(request.image).read_bytes() if request.image else None
        with self._lock:
            w = self._workers.get(worker)
            if w is None or w.state != "idle" or w.helping:
                raise WorkerGone(f"worker {worker} cannot take a job now ({w.state if w else 'gone'})")
            split = self._plan_split(w, job_id, request.to_dict())
            w.state, w.job_id = "busy", job_id
        # The transport edge: the request crosses to the actor as its plain dict.
        thread = threading.Thread(target=self._drive, args=(w, job_id, request.to_dict(), split, image, extra),
                                  name=f"drive-{job_id}", daemon=True)
        self._jobs[job_id] = thread
        thread.start()

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            w = next((w for w in self._workers.values() if w.job_id == job_id), None)
        if w is None:
            return False
        try:
            return bool(self._ray.get(w.handle.cancel.remote(job_id), timeout=10))
        except Exception:  # noqa: BLE001 - the worker died: the job ends as lost anyway
            return False

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=timeout_s)
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            try:
                self._ray.kill(w.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for t in list(self._jobs.values()):
            t.join(timeout=timeout_s)

    def unload(self, timeout_s: float = 30.0) -> list[Freed]:
        """Ask every live actor to free the models no job uses (see ``GpuWorker.unload``)."""
        with self._lock:
            workers = self._sorted()
        refs = {w.name: w.handle.unload.remote() for w in workers if w.state in ("idle", "busy")}
        freed = []
        for w in workers:
            if w.name not in refs:
                freed.append(Freed(w.name, w.device, error=f"not running ({w.state}); it holds nothing"))
                continue
            try:
                report = self._ray.get(refs[w.name], timeout=timeout_s)
            except Exception as e:  # noqa: BLE001 - a dead or stuck actor is reported, not raised
                freed.append(Freed(w.name, w.device, error=f"did not answer ({type(e).__name__})"))
                continue
            w.loaded = tuple(report["kept"])
            freed.append(Freed.from_report(w.name, w.device, report))
        return freed

    def telemetry(self) -> dict[str, Any]:
        """Nodes and workers known, split mode, network bytes per step of recent split jobs."""
        return {"backend": "ray", "address": self.address, "split": self.split,
                "workers": len(self._workers), "bytes_per_step": dict(self.bytes_per_step)}

    # -- workers -----------------------------------------------------------------------------
    def _sorted(self) -> list[_Worker]:
        return sorted(self._workers.values(), key=lambda w: w.name)

    def _slots(self) -> dict[str, tuple[str, int]]:
        """Worker name -> (node id, GPU number) for every GPU of every live node."""
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        hosts = [n.get("NodeManagerHostname") or n.get("NodeManagerAddress") for n in nodes]
        slots = {}
        for node, host in zip(nodes, hosts):
            # Two nodes on one machine (tests) share a host name: the node id keeps them apart.
            label = host if hosts.count(host) == 1 else f"{host}~{node['NodeID'][:6]}"
            for i in range(int(node.get("Resources", {}).get("GPU", 0))):
                slots[f"{label}/gpu{i}"] = (node["NodeID"], i)
        return slots

    def reconcile(self) -> None:
        """Create an actor for every GPU slot without a live one."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        slots = self._slots()
        with self._lock:
            for name, (node_id, _i) in slots.items():
                if name in self._workers:
                    continue
                restarts = self._restarts.get(name, -1) + 1
                self._restarts[name] = restarts
                handle = self._remote_cls.options(
                    num_gpus=1, num_cpus=0, max_concurrency=16, max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(name, self.options)
                w = _Worker(name, node_id, handle, restarts=restarts)
                w.pending = handle.hello.remote()
                self._workers[name] = w

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
                self.reconcile()
            except Exception:  # noqa: BLE001 - the monitor must outlive any one failure
                log.exception("cluster monitor pass failed")

    def _beat(self) -> None:
        ray = self._ray
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            if w.pending is None:
                w.pending = w.handle.heartbeat.remote()
        refs = [w.pending for w in workers]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.heartbeat_s)
        done = set(ready)
        for w in workers:
            if w.pending not in done:
                continue
            ref, w.pending = w.pending, None
            try:
                answer = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the actor or its node died
                self._forget(w, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            self._absorb(w, answer)

    def _absorb(self, w: _Worker, answer: dict[str, Any]) -> None:
        if "device" in answer:  # the answer to hello: the worker is up
            with self._lock:
                w.device, w.pid = answer["device"], answer["pid"]
                if w.state == "starting":
                    w.state = "idle"
            self._sink(JobEvent("ready", "", w.name))
            return
        with self._lock:
            w.loaded = tuple(answer["loaded"])
            w.pid = answer["pid"]
        if self.on_samples is not None and answer["samples"]:
            self.on_samples([GpuSample.from_dict(s) for s in answer["samples"]])

    def _forget(self, w: _Worker, why: str) -> None:
        with self._lock:
            if self._workers.get(w.name) is w:
                del self._workers[w.name]
                w.state, w.last_exit = "stopped", why
                log.warning("worker %s is gone (%s); it is recreated when its node is alive", w.name, why)

    # -- split planning ----------------------------------------------------------------------
    def _plan_split(self, w: _Worker, job_id: str, request: dict[str, Any]) -> dict[str, Any] | None:
        if self.split == "off" or request.get("loras") or request.get("fast"):
            # A peer computes with its own plain weights: a job's LoRAs (a fast job's distill LoRAs)
            # live only in this worker's pipeline, so such a job runs whole here.
            return None
        spec = get_spec(request["model"])
        # diffusers runs the unconditional pass only when the high-noise guidance is above 1 (a fast
        # job guides its motion steps only): an unguided job has no CFG to split, so a two-expert
        # model takes the expert split even where "cfg" was asked for.
        guided = (request.get("guidance") or 0) > 1 or bool(request.get("motion_steps"))
        if spec.boundary is not None and (self.split in ("experts", "auto") or not guided):
            pair = [x for x in self._sorted() if x.state in ("idle", "busy")][:2]
            if w in pair and len(pair) == 2:
                other = pair[1] if pair[0] is w else pair[0]
                keep = "high" if pair[0] is w else "low"
                return {"mode": "experts", "keep": keep, "peer": other.handle, "peer_name": other.name}
            return None
        if guided and self.split in ("cfg", "auto"):
            idle = [x for x in self._sorted() if x is not w and x.state == "idle" and not x.helping]
            idle.sort(key=lambda x: spec.key not in x.loaded)  # a peer holding the model starts at once
            if idle:
                idle[0].helping = job_id
                return {"mode": "cfg", "peer": idle[0].handle, "peer_name": idle[0].name}
        return None

    # -- one job -----------------------------------------------------------------------------
    def _drive(self, w: _Worker, job_id: str, request: dict[str, Any], split: dict[str, Any] | None,
               image: bytes | None, extra: dict[str, Any] | None = None) -> None:
        ray = self._ray
        terminal: JobEvent | None = None
        try:
            stream = w.handle.run.options(num_returns="streaming").remote(job_id, request, split, image, extra)
            for ref in stream:
                event = self._event(w, job_id, ray.get(ref))
                if event.kind in ("done", "failed", "cancelled", "lost"):
                    terminal = event
                    break
                if event.kind == "free":
                    # Its decode ended and the actor writes its mp4: the GPU (and a split job's peer)
                    # takes the next job now; this stream still brings the job's ending or its loss.
                    self._release(w, job_id)
                    self._sink(JobEvent("ready", "", w.name))
                    continue
                self._sink(event)
        except self._actor_errors() as e:  # the worker (or its node) died under the job
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            terminal = JobEvent("lost", job_id, w.name, error=f"worker {w.name} was lost: {why}")
            self._forget(w, why)
        except Exception as e:  # noqa: BLE001 - the worker is alive but the job could not run
            terminal = JobEvent("failed", job_id, w.name, error=f"{type(e).__name__}: {e}")
        if terminal is None:
            terminal = JobEvent("lost", job_id, w.name, error=f"worker {w.name} ended without a result")
        self._release(w, job_id)
        self._jobs.pop(job_id, None)
        self._sink(terminal)

    def _actor_errors(self) -> tuple[type[BaseException], ...]:
        """Ray's errors meaning "the actor is gone" (names differ between Ray versions)."""
        names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError")
        return tuple(getattr(self._ray.exceptions, n) for n in names if hasattr(self._ray.exceptions, n))

    def _release(self, w: _Worker, job_id: str) -> None:
        with self._lock:
            if w.job_id == job_id and w.state == "busy":
                w.state, w.job_id = "idle", None
            for x in self._workers.values():
                if x.helping == job_id:
                    x.helping = None

    def _event(self, w: _Worker, job_id: str, item: dict[str, Any]) -> JobEvent:
        """The event of one runtime message; a ``done`` one's files are stored under the head's outputs."""
        if item["ev"] == "done":
            paths = [str(self._store(rel, data)) for rel, data in item["files"].items()]
            sidecar = next((json.loads(d) for rel, d in item["files"].items() if rel.endswith(".json")), {})
            if sidecar.get("split"):
                self.bytes_per_step[job_id] = int(sidecar["split"]["bytes_per_step"])
            item = {**item, "outputs": paths}
        return event_from_message({**item, "job_id": job_id}, w.name)

    def _store(self, rel: str, data: bytes) -> Path:
        """Write one returned file under the head's outputs folder atomically."""
        target = self.outputs_dir / Path(rel)
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"refusing to write {rel!r} outside the outputs folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target


def executor_from_settings(settings: Any, config: RuntimeConfig, on_samples: SamplesSink | None = None) -> RayExecutor:
    """The Ray executor for the app's ``settings`` (``--ray-address``, split, heartbeat); every actor
    runs with the app's worker ``config`` (planner limits, speed, thermal limits, folders)."""
    return RayExecutor(settings.ray_address, settings.outputs_dir, config, split=settings.split, on_samples=on_samples,
                       heartbeat_s=max(0.5, settings.telemetry_interval_s))


__all__ = ["RayExecutor", "ClusterUnavailable", "RuntimeConfig", "ThermalConfig", "connect", "import_ray",
           "executor_from_settings"]
