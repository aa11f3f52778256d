"""The body of one worker process: holds the models for its GPU and runs one job at a time.

Started with the ``spawn`` method, so the parent never forks a process that has touched CUDA and
this module's imports stay light until the device is chosen. Messages are plain dicts over one
duplex ``multiprocessing`` connection: ``run`` / ``cancel`` / ``stop`` in, events out.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, even by ``kill -9``."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:  # pragma: no cover - unusual libc
        pass


def worker_main(name: str, device: str, config: dict[str, Any], conn: Connection) -> None:
    """Entry point of a worker process. ``device`` is ``cpu`` or ``cuda:<index>``."""
    _die_with_parent()
    # The supervisor put this worker's device mask into its environment before the process started
    # (cluster/devices.start_masked): its GPU is cuda:0 here, from the driver's first call on.
    from wan_studio.bootstrap import bootstrap

    bootstrap()
    if config.get("cpu_threads"):
        # CPU workers share the cores; without a cap each would start one thread per core and
        # they would slow each other down.
        import torch

        torch.set_num_threads(int(config["cpu_threads"]))
    send_lock = threading.Lock()

    def send(msg: dict[str, Any]) -> None:
        with send_lock:
            conn.send(msg)

    jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancels: dict[str, threading.Event] = {}

    def listen() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                # The app is gone: a job finished now would be written for nobody and would be run
                # again by the restarted app, so stop at once.
                os._exit(3)
            if msg["op"] == "run":
                cancels[msg["job_id"]] = threading.Event()
                jobs.put(msg)
            elif msg["op"] == "cancel" and msg["job_id"] in cancels:
                cancels[msg["job_id"]].set()
            elif msg["op"] == "stop":
                jobs.put(None)
                return

    threading.Thread(target=listen, name="worker-listen", daemon=True).start()
    runner = _make_runner(name, config, send, device)
    send({"ev": "ready", "pid": os.getpid()})
    while (msg := jobs.get()) is not None:
        job_id = msg["job_id"]
        try:
            runner.run(job_id, msg["request"], cancels[job_id], msg.get("extra"))
        finally:
            cancels.pop(job_id, None)
    conn.close()


def _guard_factory(config: dict[str, Any]) -> Any:
    """The thermal guard of this worker's GPU, read by its own NVML sampler (None without one)."""
    thermal = config.get("thermal")
    if not thermal:
        return None
    from wan_studio.engine.generate import Progress
    from wan_studio.gpu import ThermalGuard, ThermalLimits, make_sampler

    sampler = make_sampler(interval_s=thermal["interval_s"]).start()
    if not sampler.has_local_gpus:
        sampler.stop()
        return None
    limits = ThermalLimits(pause_c=thermal["pause_c"], resume_c=thermal["resume_c"], enabled=thermal["enabled"],
                           poll_s=sampler.interval_s, max_age_s=max(10.0, 5 * sampler.interval_s))
    guard = ThermalGuard(sampler.latest, limits)

    def factory(total: int, report: Any, cancel: threading.Event) -> Any:
        t0 = time.perf_counter()

        def note(step: int, text: str) -> None:
            report(Progress("paused", step, total, time.perf_counter() - t0, note=text))

        return guard.session(sampler.host, on_note=note, cancel=cancel)

    return factory


def _make_runner(name: str, config: dict[str, Any], send: Any, device: str = "cpu") -> Any:
    """A runner whose planner sees this worker's own GPU (the one in CUDA_VISIBLE_DEVICES)."""
    import dataclasses
    from pathlib import Path

    from wan_studio.catalog.specs import get_spec
    from wan_studio.cluster.runner import JobRunner
    from wan_studio.engine.request import GenerationRequest, RequestError
    from wan_studio.memory import hardware as hardware_mod
    from wan_studio.memory.costs import HOST_OVERHEAD_BYTES
    from wan_studio.memory.loaders import FolderLoader
    from wan_studio.memory.manager import ModelManager
    from wan_studio.memory.overrides import overrides_of
    from wan_studio.memory.plan import Limits, NoPlanFits, Workload
    from wan_studio.memory.planner import plan_ladder

    memory = config.get("memory") or {}
    hardware = hardware_mod.detect()
    limits = Limits(allow_fp8=memory.get("allow_fp8", True), allow_8bit=memory.get("allow_8bit", False))
    # Every worker process holds its own models: the host-RAM budget is shared out between them.
    budget = int(hardware.host_total_bytes * limits.host_fraction) - HOST_OVERHEAD_BYTES
    from wan_studio.engine.accel import SpeedOptions, plan_applier

    speed = SpeedOptions(**(config.get("speed") or {}))
    manager = ModelManager(FolderLoader(Path(config["models_dir"])),
                           budget_bytes=max(budget // max(1, config.get("workers", 1)), 0), apply=plan_applier(speed))

    def plans(request: GenerationRequest) -> Any:
        try:
            pins = overrides_of(request)
            if pins.gpu == device:  # this process sees its own GPU as cuda:0 (CUDA_VISIBLE_DEVICES)
                pins = dataclasses.replace(pins, gpu="cuda:0")
            return plan_ladder(get_spec(request.model), Workload.from_request(request), hardware, limits, pins)
        except NoPlanFits as e:
            raise RequestError(str(e)) from None

    return JobRunner(name, manager, Path(config["outputs_dir"]), send, _guard_factory(config), plans,
                     loras_dir=Path(config["loras_dir"]) if config.get("loras_dir") else None)
