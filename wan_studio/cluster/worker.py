"""The body of one worker process: holds the models for its GPU and runs one job at a time.

Started with the ``spawn`` method, so the parent never forks a process that has touched CUDA and
this module's imports stay light until the device is chosen. Messages are plain dicts over one
duplex ``multiprocessing`` connection: ``run`` / ``cancel`` / ``unload`` / ``stop`` in, events out.
Jobs run through the worker runtime (``runtime.py``) every executor shares.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wan_studio.cluster.runtime import RuntimeConfig


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


def _own_process_group() -> None:
    """Leave the terminal's process group: a Ctrl-C there then reaches the app alone, which stops its
    workers the way it means to (each after its job, killed past the shutdown timeout), and never
    an ffmpeg this worker started for an mp4, which would fail the job's write instead of leaving
    the job for its retry (``engine.video_io`` starts ffmpeg in this group)."""
    if hasattr(os, "setpgrp"):
        try:
            os.setpgrp()
        except OSError:  # pragma: no cover - a session leader cannot change its group
            pass


def _startup_times(entered: float, imported: float) -> dict[str, float]:
    """Seconds this process took to start, by stage: the interpreter until ``worker_main`` ran,
    the start-up imports, the runtime (it imports torch, diffusers and the models' code, makes
    the GPU's first call and starts its sampler)."""
    now = time.time()
    out = {"imports_s": round(imported - entered, 2), "runtime_s": round(now - imported, 2)}
    try:
        import psutil

        out["interpreter_s"] = round(entered - psutil.Process().create_time(), 2)
    except Exception:  # noqa: BLE001 - a figure for the log only
        pass
    return out


def _prepare(runtime: Any, send: Any) -> None:
    """Load the default model while the worker already takes jobs (one for it waits and reports
    the load's progress); say how it went."""
    try:
        note = runtime.prepare()
    except Exception as e:  # noqa: BLE001 - a model that cannot load now loads (and fails) with its job
        note = f"default model not prepared: {type(e).__name__}: {e}"
    send({"ev": "prepared", "note": note, "loaded": runtime.loaded()})


def worker_main(name: str, device: str, config: RuntimeConfig, conn: Connection) -> None:
    """Entry point of a worker process. ``device`` is ``cpu`` or ``cuda:<index>``."""
    entered = time.time()
    _die_with_parent()
    _own_process_group()
    if config.compile_cache_dir:
        # torch.compile's caches (Inductor's graphs and kernels, Triton's binaries) under the app's
        # state folder, so a restarted app reuses them instead of compiling again.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", config.compile_cache_dir)
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(config.compile_cache_dir, "triton"))
    # The supervisor put this worker's device mask (and, on a GPU, the pinned-memory settings) into
    # its environment before the process started (cluster/devices.worker_environment): its GPU is
    # cuda:0 here, from the driver's first call on.
    from wan_studio.bootstrap import bootstrap

    bootstrap()
    if config.cpu_threads:
        # CPU workers share the cores; without a cap each would start one thread per core and
        # they would slow each other down.
        import torch

        torch.set_num_threads(config.cpu_threads)
    from wan_studio.engine.warmup import start_compile_pool

    # Inductor's compile processes start while this process imports and loads, not in the
    # compile warm-up's path.
    start_compile_pool(device, config.speed, config.compile_warmup)
    send_lock = threading.Lock()

    def send(msg: dict[str, Any]) -> None:
        with send_lock:
            conn.send(msg)

    from wan_studio.cluster.runtime import WorkerRuntime
    from wan_studio.cluster.writer import BackgroundWriter

    imported = time.time()

    # This process sees the app's GPU <i> as cuda:0 (its device mask): a job pinned to it keeps its pin.
    # Its mp4 writes run on a thread of their own: the next job starts when a decode ends.
    runtime = WorkerRuntime(name, config, pins={device: "cuda:0"} if device.startswith("cuda:") else None,
                            writer=BackgroundWriter(before=config.before_write))
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
            elif msg["op"] == "unload":
                # Answered at once, while a job runs too: the manager keeps what that job holds.
                send({"ev": "unloaded", "ticket": msg["ticket"], "report": runtime.unload(),
                      "loaded": runtime.loaded()})
            elif msg["op"] == "prepare" and not preparing.is_set():
                # the app chose the default model after this process started (``launch_workers``)
                begin_prepare(msg["want"])
            elif msg["op"] == "stop":
                jobs.put(None)
                return

    preparing = threading.Event()

    def begin_prepare(want: dict[str, Any] | None) -> None:
        if want and not preparing.is_set():
            preparing.set()
            runtime.config = dataclasses.replace(runtime.config, prepare=want)
            threading.Thread(target=_prepare, args=(runtime, send), name="worker-prepare", daemon=True).start()

    begin_prepare(config.prepare)
    threading.Thread(target=listen, name="worker-listen", daemon=True).start()
    send({"ev": "ready", "pid": os.getpid(), "startup": _startup_times(entered, imported)})
    while (msg := jobs.get()) is not None:
        job_id = msg["job_id"]
        try:
            runtime.run_job(job_id, msg["request"], cancels[job_id], send, msg.get("extra"))
        finally:
            cancels.pop(job_id, None)
    runtime.close()
    conn.close()
