"""One job from request to files: LoRAs and step cache around a normal or long-clip generation.

Executors (the local worker, Ray actors) call ``execute`` with a pipeline borrowed from the model
manager; everything a request asks for beyond the plain pipeline call is applied and removed here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.caches import MagRatios, plan_cache, step_cache
from wan_studio.engine.checkpoint import StepCheckpoints, request_key
from wan_studio.engine.distill import recipe_loras
from wan_studio.engine.generate import ProgressFn, generate, output_paths
from wan_studio.engine.long_video import generate_long, plan_long_clip
from wan_studio.engine.lora import LoraChoice, loras_applied
from wan_studio.engine.request import GenerationRequest, GenerationResult, default_overlap
from wan_studio.engine.video_io import write_json


WORK_FOLDER = ".work"
CALIBRATION_FOLDER = ".calibration"
CLAIM_FILE = "outputs.json"


def work_dir_of(outputs_dir: Path, job_id: str) -> Path:
    """Where job ``job_id`` keeps its step checkpoints and finished long-clip windows until it is
    done (survives crashes)."""
    return Path(outputs_dir) / WORK_FOLDER / job_id


def _claimed(work_dir: Path) -> tuple[Path, Path] | None:
    """The (mp4, sidecar) pair recorded in ``work_dir`` by ``claim_outputs``, or None."""
    try:
        data = json.loads((Path(work_dir) / CLAIM_FILE).read_text(encoding="utf-8"))
        return Path(data["video"]), Path(data["sidecar"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim_outputs(outputs_dir: Path, work_dir: Path, request: GenerationRequest) -> tuple[Path, Path]:
    """The mp4 and sidecar paths of a job: chosen at its first attempt, kept in ``work_dir`` and
    reused by every retry. A worker killed after the video was in place but before the job was
    recorded done therefore leaves no second copy: the retry writes over the same file."""
    claimed = _claimed(work_dir)
    if claimed is not None:
        return claimed
    video, sidecar = output_paths(outputs_dir, request)
    write_json(Path(work_dir) / CLAIM_FILE, {"video": str(video), "sidecar": str(sidecar)})
    return video, sidecar


def finished_earlier(work_dir: Path, job_id: str) -> tuple[Path, Path] | None:
    """The outputs an earlier attempt of ``job_id`` finished writing (the sidecar, written last and
    atomically, is in place and names this job) though the job was never recorded done; else None."""
    claimed = _claimed(work_dir)
    if claimed is None or not claimed[0].is_file():
        return None
    try:
        named = json.loads(claimed[1].read_text(encoding="utf-8")).get("job_id")
    except (OSError, ValueError, AttributeError):
        return None
    return claimed if named == job_id else None


def drop_claimed_outputs(work_dir: Path) -> list[Path]:
    """Remove the claimed mp4 and sidecar of a job that ends without them (failed, cancelled, given
    up): an attempt stopped after writing them, before the job was recorded done, leaves files no job
    owns. Returns what was removed."""
    claimed = _claimed(work_dir)
    if claimed is None:
        return []
    removed = [p for p in claimed if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    (Path(work_dir) / CLAIM_FILE).unlink(missing_ok=True)
    try:
        Path(work_dir).rmdir()  # a plain clip's work folder held only the claim; a long clip's keeps its windows
    except OSError:
        pass
    return removed


def preview_of(outputs_dir: Path, job_id: str) -> Path | None:
    """Job ``job_id``'s live preview while it runs (a JPEG of its latest step), or None."""
    from wan_studio.engine.preview import latest_preview

    return latest_preview(work_dir_of(outputs_dir, job_id))


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
    paths: tuple[Path, Path] | None = None,
    write_later: Callable[[Callable[[], GenerationResult]], None] | None = None,
    preview: Any = None,
) -> GenerationResult:
    """Run a validated, resolved ``request`` on ``pipe`` and write its mp4 + sidecar (at ``paths``
    when given, see ``claim_outputs``).

    ``work_dir`` keeps step checkpoints and the finished windows of a long clip, so running the
    same job again resumes it. A step cache keeps state of its own outside the latents, so a job
    with one keeps no checkpoints and restarts at step 0. ``write_later`` (see ``generate``) takes
    the mp4 write (a long clip's: its assembly) off the caller's path. ``preview`` (an
    ``engine.preview.LivePreview``) is written after every step.
    """
    spec = get_spec(request.model)
    extra = dict(extra_sidecar or {})
    choices = [LoraChoice.parse(x) for x in recipe_loras(request, loras_dir) + list(request.loras or [])]
    cache = None
    if request.step_cache:
        cache = plan_cache(pipe, request, request.step_cache, request.cache_threshold,  # type: ignore[arg-type]
                           ratios or MagRatios())
        extra["step_cache"] = {"kind": cache.kind, "note": cache.note, "trades": "quality for speed"}
    with loras_applied(pipe, spec, choices, loras_dir) as applied, step_cache(pipe, cache):
        if applied:
            extra["loras"] = applied
        if request.fast:
            extra["fast"] = {"recipe": request.fast, "motion_steps": request.motion_steps or 0,
                             "trades": "quality and motion for speed (docs/FAST.md)"}
        keep = cache is None
        if request.total_frames is None:
            checkpoints = StepCheckpoints(work_dir, request_key(request.to_dict())) if keep else None
            return generate(pipe, request, outputs_dir, on_progress, cancel, extra, between_steps, paths,
                            checkpoints=checkpoints, write_later=write_later,
                            preview=preview)
        clip = plan_long_clip(request, request.total_frames,
                              request.window_overlap or default_overlap(request.num_frames), request.window_prompts)
        return generate_long(pipe, request, clip, work_dir, outputs_dir, on_progress, cancel, between_steps, extra,
                             paths, step_checkpoints=keep, preview=preview, write_later=write_later)
