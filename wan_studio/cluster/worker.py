"""The body of one worker process: holds the models for its GPU and runs one job at a time.

Started with the ``spawn`` method, so the parent never forks a process that has touched CUDA and
this module's imports stay light until the device is chosen. Messages are plain dicts over one
duplex ``multiprocessing`` connection: ``run`` / ``cancel`` / ``stop`` in, events out.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
import traceback
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
    if device.startswith("cuda:"):
        # Pin before torch is imported so the worker only ever sees its own GPU (as cuda:0).
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
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
    runner = _Runner(name, config, send)
    send({"ev": "ready", "pid": os.getpid()})
    while (msg := jobs.get()) is not None:
        job_id = msg["job_id"]
        try:
            runner.run(job_id, msg["request"], cancels[job_id])
        finally:
            cancels.pop(job_id, None)
    conn.close()


class _Runner:
    """Runs jobs with a model manager that lives as long as the process (models stay loaded)."""

    def __init__(self, name: str, config: dict[str, Any], send: Any) -> None:
        from pathlib import Path

        from wan_studio.memory.manager import ModelManager, default_loader

        self.name = name
        self.outputs_dir = Path(config["outputs_dir"])
        self.manager = ModelManager(default_loader(Path(config["models_dir"])))
        self.send = send

    def run(self, job_id: str, request: dict[str, Any], cancel: threading.Event) -> None:
        """Run one job and send exactly one terminal event for it."""
        from wan_studio.catalog.specs import get_spec
        from wan_studio.engine.generate import GenerationCancelled, Progress, generate
        from wan_studio.engine.request import GenerationRequest, RequestError

        self.send({"ev": "started", "job_id": job_id, "at": time.time(), "loaded": list(self.manager.loaded())})

        def report(p: Progress) -> None:
            self.send({"ev": "progress", "job_id": job_id, "progress": dataclasses.asdict(p)})

        try:
            req = GenerationRequest.from_dict(request)
            spec = get_spec(req.model)
            report(Progress("loading", 0, req.steps or 0, 0.0))
            warm = spec.key in self.manager.loaded()
            with self.manager.use(spec) as pipe:
                plan = self.manager.loaded().get(spec.key, "")
                result = generate(pipe, req, self.outputs_dir, report, cancel,
                                  extra_sidecar={"placement": plan, "job_id": job_id, "worker": self.name,
                                                 "model_was_loaded": warm})
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
            self.send({"ev": "failed", "job_id": job_id, "at": time.time(),
                       "error": f"{type(e).__name__}: {e}"})


def _user_text(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.strerror and not e.filename:
        return e.strerror
    return str(e)
