"""One job from request to files: LoRAs and step cache around a normal or long-clip generation.

Executors (the local worker, Ray actors) call ``execute`` with a pipeline borrowed from the model
manager; everything a request asks for beyond the plain pipeline call is applied and removed here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.caches import MagRatios, plan_cache, step_cache
from wan_studio.engine.generate import ProgressFn, generate
from wan_studio.engine.long_video import generate_long, plan_long_clip
from wan_studio.engine.lora import LoraChoice, loras_applied
from wan_studio.engine.request import GenerationRequest, GenerationResult, default_overlap


WORK_FOLDER = ".work"
CALIBRATION_FOLDER = ".calibration"


def work_dir_of(outputs_dir: Path, job_id: str) -> Path:
    """Where job ``job_id`` keeps its finished long-clip windows until it is done (survives crashes)."""
    return Path(outputs_dir) / WORK_FOLDER / job_id


def calibration_dir_of(outputs_dir: Path) -> Path:
    """Where MagCache ratios calibrated on this machine's weights are stored."""
    return Path(outputs_dir) / CALIBRATION_FOLDER


def execute(
    pipe: Any,
    request: GenerationRequest,
    outputs_dir: Path,
    *,
    loras_dir: Path,
    work_dir: Path,
    ratios: MagRatios | None = None,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    between_steps: Callable[[int], None] | None = None,
    extra_sidecar: dict[str, Any] | None = None,
) -> GenerationResult:
    """Run a validated, resolved ``request`` on ``pipe`` and write its mp4 + sidecar.

    ``work_dir`` keeps the finished windows of a long clip, so running the same job again resumes it.
    """
    spec = get_spec(request.model)
    extra = dict(extra_sidecar or {})
    choices = [LoraChoice.parse(x) for x in request.loras or []]
    cache = None
    if request.step_cache:
        cache = plan_cache(pipe, request, request.step_cache, request.cache_threshold,  # type: ignore[arg-type]
                           ratios or MagRatios())
        extra["step_cache"] = {"kind": cache.kind, "note": cache.note, "trades": "quality for speed"}
    with loras_applied(pipe, spec, choices, loras_dir) as applied, step_cache(pipe, cache):
        if applied:
            extra["loras"] = applied
        if request.total_frames is None:
            return generate(pipe, request, outputs_dir, on_progress, cancel, extra, between_steps)
        clip = plan_long_clip(request, request.total_frames,
                              request.window_overlap or default_overlap(request.num_frames), request.window_prompts)
        return generate_long(pipe, request, clip, work_dir, outputs_dir, on_progress, cancel, between_steps, extra)
