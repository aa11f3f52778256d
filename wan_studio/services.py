"""Wiring: builds the catalog view, presets, job store, queue and executor once; runs jobs for the UI/API.

Generation never happens in this (the Gradio) process: ``run`` queues the request and waits for a
worker process to finish it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_studio.catalog import loading
from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.cluster.local import LocalExecutor, detect_devices
from wan_studio.engine.generate import GenerationCancelled, ProgressFn
from wan_studio.engine.request import GenerationRequest, GenerationResult, RequestError
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import JobStore
from wan_studio.memory.manager import ModelManager, default_loader
from wan_studio.presets import Preset, load_presets
from wan_studio.settings import Settings

__all__ = ["Studio", "GenerationCancelled", "RequestError", "ModelUnavailable", "JobFailed"]


class ModelUnavailable(RequestError):
    """The request names a model that is not downloaded or is incomplete; says how to fix it."""


class JobFailed(RuntimeError):
    """A queued job ended in ``failed``; the message is the reason the worker gave."""


def worker_devices(settings: Settings) -> list[str]:
    """Devices to start workers on: every GPU by default, or ``settings.workers`` of them."""
    found = detect_devices()
    if settings.workers is None:
        return found
    if found == ["cpu"]:
        return ["cpu"] * settings.workers
    return found[: settings.workers]


@dataclass
class Studio:
    """The services one app process uses. Build with ``Studio.create(settings)``."""

    settings: Settings
    manager: ModelManager
    presets: dict[str, Preset]
    # The persistent queue; its workers own the models. ``manager`` stays for callers that
    # inspect it, but generation never loads a pipeline into this process.
    jobs: JobQueue | None = None

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None) -> Studio:
        """Build every service from ``settings``; raises ``StoreError`` if the job database is damaged.

        Worker processes start on ``start()`` (or the first submitted job).
        """
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        manager = manager or ModelManager(default_loader(settings.models_dir))
        studio = cls(settings=settings, manager=manager, presets=load_presets())
        executor = LocalExecutor(settings.models_dir, settings.outputs_dir, worker_devices(settings))
        studio.jobs = JobQueue(JobStore(settings.jobs_db), executor, settings.outputs_dir,
                               max_length=settings.max_queue, max_attempts=settings.max_attempts,
                               max_prompt_chars=settings.max_prompt_chars, check=studio.check_available)
        return studio

    @property
    def queue(self) -> JobQueue:
        """The job queue (always built by ``create``)."""
        assert self.jobs is not None, "build Studio with Studio.create(settings)"
        return self.jobs

    def start(self) -> None:
        """Repair the queue after a crash and start the worker processes."""
        self.queue.start()

    def close(self) -> None:
        """Stop the workers and release the job database."""
        if self.jobs is not None:
            self.jobs.close()
            self.jobs.store.close()

    def check_available(self, request: GenerationRequest) -> None:
        """Raise ``ModelUnavailable`` unless the request's model can be loaded now."""
        spec = get_spec(request.model)
        avail = self.availability(spec)
        if not avail.usable:
            raise ModelUnavailable(f"{spec.title} is {avail.detail}")

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
        """Queue ``request`` for ``owner`` (who may cancel it) and wait until a worker finishes it.

        Raises ``RequestError`` (bad input, model missing, queue full), ``GenerationCancelled`` or
        ``JobFailed`` (with the worker's reason).
        """
        report = on_progress or (lambda p: None)
        job = self.queue.submit(request, owner=owner)
        job = self.queue.wait(job.id, on_change=lambda j: report(self.queue.progress_of(j)))
        if job.status == "cancelled":
            raise GenerationCancelled(job.error or "cancelled")
        if job.status != "done":
            raise JobFailed(job.error or f"the job ended as {job.status}")
        return result_of(job.outputs)

    def cancel(self, owner: str) -> bool:
        """Ask every unfinished job of ``owner`` to stop; True if there was one."""
        return self.queue.cancel_owner(owner) > 0

    def describe(self) -> dict[str, Any]:
        """What each worker process has loaded, for the UI."""
        workers = self.queue.executor.workers()
        return {"loaded": {m: w.device for w in workers for m in w.loaded},
                "workers": [w.__dict__ for w in workers]}


def result_of(outputs: list[str]) -> GenerationResult:
    """Rebuild a ``GenerationResult`` from a finished job's files (mp4 + JSON sidecar)."""
    video = Path(next(o for o in outputs if o.endswith(".mp4")))
    sidecar_path = Path(next(o for o in outputs if o.endswith(".json")))
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    peak = sidecar.get("peak_vram_gib")
    return GenerationResult(video, sidecar_path, GenerationRequest.from_dict(sidecar["request"]),
                            dict(sidecar.get("timings", {})), int(peak * 2**30) if peak is not None else None)
