"""Wiring: builds the catalog view, model manager and presets once, and runs jobs for the UI/API."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog import loading
from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.engine.generate import GenerationCancelled, Progress, ProgressFn, generate
from wan_studio.engine.request import GenerationRequest, GenerationResult, RequestError, validate
from wan_studio.engine.video_io import join_clips
from wan_studio.memory.manager import ModelManager, default_loader
from wan_studio.presets import Preset, load_presets
from wan_studio.settings import Settings

__all__ = ["Studio", "GenerationCancelled", "RequestError", "ModelUnavailable"]


@dataclass(frozen=True)
class PairResult:
    """A scene clip and a talking clip, and their join when asked for."""

    scene: GenerationResult
    talk: GenerationResult
    joined: Path | None


class ModelUnavailable(RequestError):
    """The request names a model that is not downloaded or is incomplete; says how to fix it."""


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

    @classmethod
    def create(cls, settings: Settings, manager: ModelManager | None = None) -> Studio:
        """Build every service from ``settings``."""
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        manager = manager or ModelManager(default_loader(settings.models_dir))
        return cls(settings=settings, manager=manager, presets=load_presets())

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
        """Validate and run ``request`` to completion; ``owner`` is who may cancel it.

        Raises ``RequestError`` (bad input, model missing) or ``GenerationCancelled``.
        """
        r = validate(request, self.settings.max_prompt_chars)
        spec = get_spec(r.model)
        avail = self.availability(spec)
        if not avail.usable:
            raise ModelUnavailable(f"{spec.title} is {avail.detail}")
        report = on_progress or (lambda p: None)
        cancel = self._begin(owner)
        try:
            report(Progress("loading", 0, r.steps, 0.0))
            with self._run_lock:
                if cancel.is_set():
                    raise GenerationCancelled("cancelled while waiting for the GPU")
                with self.manager.use(spec) as pipe:
                    placement = self.manager.loaded().get(spec.key, "")
                    return generate(pipe, r, self.settings.outputs_dir, report, cancel,
                                    extra_sidecar={"placement": placement})
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
