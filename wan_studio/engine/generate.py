"""Run one validated request through a Wan pipeline: progress, cancel, mp4 + JSON sidecar.

Knows nothing of Gradio, SQLite or Ray: callers pass a progress callback and a cancel event.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from PIL import Image

import wan_studio
from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.engine.checkpoint import StepCheckpoints, resumed_from
from wan_studio.engine.decode import DecodeProgress, decode_pieces, decoded_on_host
from wan_studio.engine.distill import motion_phase, sampler_of
from wan_studio.engine.framing import frame_of, load_framed
from wan_studio.engine.noise import NoiseSource, seeded_generator
from wan_studio.engine.preview import LivePreview
from wan_studio.engine.request import GenerationRequest, GenerationResult
from wan_studio.engine.sampler import official_scheduler, sampler_record
from wan_studio.engine.video_io import frames_to_uint8, write_mp4, write_record
from wan_studio.memory.costs import JOB_PHASES
from wan_studio.memory.plan import compile_s_of

Stage = Literal["loading", "encoding", "denoising", "paused", "decoding", "writing", "done"]


class GenerationCancelled(Exception):
    """The user cancelled; nothing was decoded or written."""


@dataclass(frozen=True)
class Progress:
    """Where a job stands. ``step`` of ``total`` denoising steps; times in seconds."""

    stage: Stage
    step: int
    total: int
    elapsed_s: float
    eta_s: float | None = None
    # e.g. "paused: GPU 0 at 86 °C, cooling" while stage is "paused", "loading Wan2.2 TI2V-5B 46 %"
    note: str | None = None
    window: int = 0  # long clips: index of the window being made, of ``windows``
    windows: int = 1
    decoded: float = 0.0  # while decoding: the share of the video's pieces decoded, 0..1

    @property
    def fraction(self) -> float:
        """0..1 over the whole job; denoising is most of it, so it drives the bar; decoding moves it
        from 0.95 to 0.99 as the pieces come."""
        if self.stage == "done":
            return 1.0
        if self.stage == "decoding":
            inner = 0.95 + 0.04 * min(max(self.decoded, 0.0), 1.0)
        elif self.stage == "writing":
            inner = 0.99
        else:
            inner = 0.95 * self.step / max(self.total, 1)
        return (self.window + inner) / self.windows

    @property
    def message(self) -> str:
        """One line for a progress bar, e.g. ``step 12/50 · 34 s left`` (``window 2/5 · `` first
        for long clips)."""
        prefix = f"window {self.window + 1}/{self.windows} · " if self.windows > 1 else ""
        return prefix + self._stage_message()

    def _stage_message(self) -> str:
        if self.stage in ("paused", "loading") and self.note:
            return self.note  # "paused: GPU 0 at 86 °C, cooling", "loading Wan2.2 TI2V-5B 46 %"
        if self.stage == "paused":
            return "paused"
        eta = f" · {self.eta_s:.0f} s left" if self.eta_s is not None else ""
        if self.stage == "denoising":
            return f"step {self.step}/{self.total}{eta}"
        if self.stage == "decoding":
            return f"decoding video {self.decoded:.0%}{eta}" if self.decoded else "decoding video"
        return {"loading": "loading model", "encoding": "encoding prompt", "decoding": "decoding video",
                "writing": "writing mp4", "done": "done"}[self.stage]


ProgressFn = Callable[[Progress], None]


def image_to_video_twin(pipe: Any) -> Any:
    """The ``WanImageToVideoPipeline`` sharing every component of a text-to-video Wan pipeline."""
    from diffusers import WanImageToVideoPipeline

    if isinstance(pipe, WanImageToVideoPipeline):
        return pipe
    return WanImageToVideoPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        transformer=pipe.transformer,
        transformer_2=getattr(pipe, "transformer_2", None),
        scheduler=pipe.scheduler,
        image_encoder=None,
        image_processor=None,
        boundary_ratio=pipe.config.boundary_ratio,
        expand_timesteps=pipe.config.expand_timesteps,
    )


@contextmanager
def uniform_timestep(runner: Any) -> Iterator[bool]:
    """Give the transformer one timestep per sample instead of one per token, where that is the same.

    TI2V-5B's pipeline (``expand_timesteps``) always hands the transformer a timestep per latent
    token, so every block modulates with a (tokens, 6·dim) tensor. Only an image-conditioned run
    needs that (its first latent frame stays at t = 0); text to video gives every token the same
    value. There the scalar form computes the same numbers with a (1, 6·dim) modulation: ~13 % less
    time per 720p step on an H200 and a 1.8 GiB lower peak. Yields whether the scalar form is used.
    """
    from diffusers import WanImageToVideoPipeline

    config = getattr(runner, "config", None)
    if not getattr(config, "expand_timesteps", False) or isinstance(runner, WanImageToVideoPipeline):
        yield False
        return
    runner.register_to_config(expand_timesteps=False)
    try:
        yield True
    finally:
        runner.register_to_config(expand_timesteps=True)


def output_paths(outputs_dir: Path, request: GenerationRequest,
                 claimed: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """``<outputs>/<date>/<time>-<model>-<seed>-<tag>.mp4`` and its ``.json`` sidecar, or the
    ``claimed`` pair a job chose at its first attempt (``engine.job.claim_outputs``)."""
    if claimed is not None:
        return Path(claimed[0]), Path(claimed[1])
    now = _dt.datetime.now()
    stem = f"{now:%H%M%S}-{request.model}-{request.seed}-{secrets.token_hex(2)}"
    folder = Path(outputs_dir) / f"{now:%Y-%m-%d}"
    return folder / f"{stem}.mp4", folder / f"{stem}.json"


@dataclass
class Rendered:
    """Frames of one pipeline run, uint8 (T, H, W, 3), and where the time went (seconds)."""

    frames: np.ndarray
    timings: dict[str, float]
    peak_vram_bytes: int | None
    resumed_from: int | None = None  # the step a kept checkpoint let this run start after
    sampler: dict[str, Any] | None = None  # scheduler, shift and the timesteps that ran
    noise: NoiseSource | None = None
    # Unix seconds at which the run began (prompt encoding) and its decode ended: the GPU's idle gap
    # between two queued jobs is the next job's start minus this job's decode end.
    clock: tuple[float, float] | None = None


def render(
    pipe: Any,
    request: GenerationRequest,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    between_steps: Callable[[int], None] | None = None,
    start_image: Image.Image | None = None,
    checkpoints: StepCheckpoints | None = None,
    as_uint8: bool = True,
    preview: LivePreview | None = None,
) -> Rendered:
    """Run the pipeline for a validated, resolved ``request`` and return its frames (no files).

    Raises ``GenerationCancelled`` when ``cancel`` is set; the check runs after every denoising
    step and raises from the step callback, so the partial latents are never decoded.
    ``between_steps(done_steps)``, when given, runs once before the first step (with the steps a
    resumed run starts after, else 0) and after each step's progress report, each time before the
    cancel check; it may block (the thermal guard waits there while a GPU cools). ``start_image``
    overrides ``request.image`` with an image already in memory (long clips continue from a frame).
    ``checkpoints``, when given, keeps the denoising state every few steps and starts from the
    one an earlier, stopped run of the same request kept. ``as_uint8=False`` leaves the frames as
    the decoder's floats in [0, 1] (a background writer converts them while it encodes).
    ``preview``, when given, is offered the latents after every step (the live preview: a small
    picture of the x0 estimate).
    """
    spec = get_spec(request.model)
    report = on_progress or (lambda p: None)
    cancel = cancel or threading.Event()
    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_ends: list[float] = []
    # Seconds spent in ``between_steps`` (thermal pauses): kept out of the first step's and per-step time
    # and the ETA ("before": ahead of the first step; "between": between two steps).
    paused = {"before": 0.0, "between": 0.0, "total": 0.0}
    start = 0  # steps an earlier run finished and checkpointed

    ran: list[Any] = []  # the timestep of every step, as the pipeline ran it
    text_spans: list[float] = []  # seconds of each prompt encoding (onloading the text encoder included)

    def on_step_end(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if cuda:
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
        ran.append(t)
        done = start + i + 1
        if motion is not None:
            motion.after_step(pipe, _pipe, done)
        if checkpoints is not None:
            last = step_ends[-1] - step_ends[-2] if len(step_ends) >= 2 else None
            checkpoints.offer(done, request.steps, kwargs["latents"], _pipe.scheduler, last)
        if preview is not None:
            preview.offer(done, kwargs["latents"], _pipe.scheduler)
        eta = None
        if len(step_ends) >= 2:
            per_step = (step_ends[-1] - step_ends[0] - paused["between"]) / (len(step_ends) - 1)
            eta = per_step * (request.steps - done)
        report(Progress("denoising", done, request.steps, step_ends[-1] - t0, eta))
        if between_steps is not None:
            t_wait = time.perf_counter()
            between_steps(done)
            waited = time.perf_counter() - t_wait
            paused["total"] += waited
            if done < request.steps:
                paused["between"] += waited
        if cancel.is_set():
            raise GenerationCancelled(f"cancelled after step {done} of {request.steps}")
        if done == request.steps:
            report(Progress("decoding", done, request.steps, step_ends[-1] - t0))
            decoding.expect(decode_pieces(_pipe.vae, kwargs["latents"].shape))
        return kwargs

    def on_piece(done: int, total: int, spent_s: float) -> None:
        report(Progress("decoding", request.steps, request.steps, time.perf_counter() - t0,
                        spent_s / done * (total - done), decoded=done / total))

    decoding = DecodeProgress(on_piece)

    if cancel.is_set():
        raise GenerationCancelled("cancelled before start")
    report(Progress("encoding", 0, request.steps, 0.0))
    kwargs = _pipeline_kwargs(spec, request)
    kwargs["generator"], noise = seeded_generator(request.seed, pipe._execution_device)
    runner = pipe
    # A start image in memory (a long clip's next window) already has the frame's size.
    size = start_image.size if start_image is not None else frame_of(request)
    kwargs["width"], kwargs["height"] = size
    if start_image is None and request.image is not None:
        start_image = load_framed(request.image, spec.task, size, request.framing)
    if start_image is not None:
        runner = image_to_video_twin(pipe)
        kwargs["image"] = start_image
        if request.last_image is not None:
            kwargs["last_image"] = load_framed(request.last_image, spec.task, size, request.framing)
    runner.scheduler = official_scheduler(runner.scheduler, request.shift)
    # A fast job's sampler first: a saved step checkpoint is read back onto the scheduler that runs.
    with sampler_of(runner, request):
        snap = checkpoints.load(runner.scheduler, request.steps) if checkpoints is not None else None
        if snap is not None:
            start, kwargs["latents"] = snap.step, snap.latents
        if between_steps is not None:
            # Before any work too: a job meeting a GPU that is already hot waits before its first
            # step, and a run resumed at its last step (nothing left to denoise) before its decode,
            # which otherwise would never meet the guard at all.
            t_wait = time.perf_counter()
            between_steps(start)
            paused["before"] = time.perf_counter() - t_wait
            paused["total"] += paused["before"]
        if cancel.is_set():
            raise GenerationCancelled(f"cancelled before step {start + 1} of {request.steps}")
        motion = motion_phase(request, start)
        if motion is not None:
            motion.start(pipe, kwargs)
        if start >= request.steps:  # resumed after its last step: no step will say the decode starts
            report(Progress("decoding", request.steps, request.steps, time.perf_counter() - t0))
            decoding.expect(decode_pieces(runner.vae, kwargs["latents"].shape))
        try:
            with (torch.inference_mode(), uniform_timestep(runner), resumed_from(runner.scheduler, snap),
                  decoded_on_host(runner.vae), timed_text(runner, text_spans), decoding.watch(runner.vae)):
                out = runner(**kwargs, callback_on_step_end=on_step_end)
        finally:
            if checkpoints is not None:
                checkpoints.flush()  # a retry in this process (a lighter plan after OOM) reads it
        sampler = sampler_record(runner.scheduler, ran)  # a fast job's sampler is still in place here
    t_decoded = time.perf_counter()
    if cancel.is_set():
        raise GenerationCancelled("cancelled during decoding")
    frames = frames_to_uint8(out.frames[0]) if as_uint8 else out.frames[0]
    now = time.time()
    timings = {
        "first_step_s": (step_ends[0] - t0 - paused["before"]) if step_ends else 0.0,
        "denoise_s": (step_ends[-1] - t0) if step_ends else 0.0,
        "decode_s": t_decoded - (step_ends[-1] if step_ends else t0),
        "text_s": sum(text_spans),
    }
    if len(step_ends) >= 2:
        timings["s_per_step"] = (step_ends[-1] - step_ends[0] - paused["between"]) / (len(step_ends) - 1)
    if paused["total"] > 0.05:
        timings["paused_s"] = paused["total"]
    return Rendered(frames, timings, torch.cuda.max_memory_allocated() if cuda else None,
                    start if snap is not None else None, sampler, noise, (now - (t_decoded - t0), now))


@contextmanager
def timed_text(pipe: Any, spans: list[float]) -> Iterator[None]:
    """Time every ``pipe.encode_prompt`` call of the block into ``spans`` (seconds, device synced);
    a pipeline without one (speech to video) is left alone."""
    encode = getattr(pipe, "encode_prompt", None)
    if encode is None:
        yield
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return encode(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            spans.append(time.perf_counter() - t)

    own = vars(pipe).get("encode_prompt")  # an instance's own override, put back after
    pipe.encode_prompt = timed
    try:
        yield
    finally:
        if own is not None:
            pipe.encode_prompt = own
        else:
            del pipe.encode_prompt  # the class's method again


def generate(
    pipe: Any,
    request: GenerationRequest,
    outputs_dir: Path,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    extra_sidecar: dict[str, Any] | None = None,
    between_steps: Callable[[int], None] | None = None,
    paths: tuple[Path, Path] | None = None,
    checkpoints: StepCheckpoints | None = None,
    write_later: Callable[[Callable[[], GenerationResult]], None] | None = None,
    preview: LivePreview | None = None,
) -> GenerationResult:
    """Make the video of a validated, resolved ``request`` with ``pipe``; write mp4 + sidecar.

    Cancel and ``between_steps`` behave as in ``render``. ``extra_sidecar`` is read when the sidecar
    is written, so lists in it that fill during the run (thermal pauses) are recorded complete.
    ``paths`` names the mp4 and sidecar to write (default: a new name under ``outputs_dir``).
    ``checkpoints`` (see ``render``) are removed once the video and sidecar are written.
    ``preview`` (see ``render``) is written after every step.

    ``write_later``, when given, receives the write (encode the mp4, then the sidecar, then drop the
    checkpoints; returns the ``GenerationResult``) instead of it running here, once the frames are
    decoded to host memory: a worker runs it off the GPU's path while its next job starts. The
    result returned then names the files the write will make; nothing is on disk yet.
    """
    if get_spec(request.model).task == "s2v":
        # Speech-to-video runs through Wan Studio's own chunked pipeline (not a diffusers one).
        from wan_studio.engine.s2v.runner import generate_s2v

        return generate_s2v(pipe, request, outputs_dir, on_progress, cancel, extra_sidecar,
                            between_steps=between_steps, paths=paths, preview=preview, write_later=write_later)
    report = on_progress or (lambda p: None)
    t0 = time.perf_counter()
    done = render(pipe, request, report, cancel, between_steps, checkpoints=checkpoints,
                  as_uint8=write_later is None, preview=preview)
    t_decoded = time.perf_counter()
    report(Progress("writing", request.steps, request.steps, t_decoded - t0))
    video_path, sidecar_path = output_paths(outputs_dir, request, paths)
    # What the sidecar takes from the pipeline is read now: it is lent to the next job during a
    # background write (the speed knobs are put back when this job lets it go).
    speed = dict(pipe.wan_speed) if getattr(pipe, "wan_speed", None) else None
    peak_reserved = torch.cuda.max_memory_reserved() if torch.cuda.is_available() else None

    def write() -> GenerationResult:
        t_write = time.perf_counter()
        frames = done.frames
        # Floats left by the decoder are converted frame by frame while the encoder runs.
        write_mp4(video_path, frames if frames.dtype == np.uint8 else (frames_to_uint8(f) for f in frames),
                  request.fps)
        t_written = time.perf_counter()
        write_s = t_written - t_write
        timings = {**done.timings, "write_s": write_s, "total_s": t_decoded - t0 + write_s}
        sidecar = sidecar_for(request, frames, request.fps, video_path, timings, done.peak_vram_bytes,
                              peak_reserved)
        sidecar["sampler"] = done.sampler
        sidecar["noise"] = done.noise.record() if done.noise else None
        if done.clock is not None:
            sidecar["clock"] = {"started_at": round(done.clock[0], 3), "decoded_at": round(done.clock[1], 3),
                                "written_at": round(time.time(), 3),
                                "mp4_written": "off the GPU's path" if write_later is not None else "in line"}
        if speed:  # attention kernel and compile, set when the plan was applied
            sidecar["speed"] = speed
        if checkpoints is not None:
            sidecar["checkpoints"] = checkpoints.record(done.resumed_from)
        record = {**sidecar, **(extra_sidecar or {})}
        beside = prediction_beside_measured(record.get("plan"), timings, record, request.steps)
        if beside:
            record["predicted_vs_measured"] = beside
        write_record(video_path, sidecar_path, record)
        if checkpoints is not None:
            checkpoints.remove()
        report(Progress("done", request.steps, request.steps, timings["total_s"]))
        return GenerationResult(video_path, sidecar_path, request, timings, done.peak_vram_bytes)

    if write_later is not None:
        write_later(write)
        return GenerationResult(video_path, sidecar_path, request, dict(done.timings), done.peak_vram_bytes)
    return write()


def prediction_beside_measured(plan: dict[str, Any] | None, timings: dict[str, float], record: dict[str, Any],
                               steps: int) -> dict[str, Any] | None:
    """The plan's predicted phases beside this job's measured ones, ``phase: [predicted, measured]``
    in seconds (measured None where the job did not time it), and the peak VRAM in GiB. Loading
    counts on a worker that did not hold the model; compiling as the worker expected this job's
    shapes to need (``record["compile_needs"]``, ``engine.compile_log``: the full compile on the
    model's first run, a recompile at a shape its compiled blocks had not traced; without it, on a
    worker that did not hold the model). None without a plan's phases."""
    ph = (plan or {}).get("phases") or {}
    if not ph:
        return None
    cold = record.get("model_was_loaded") is False
    needs = record.get("compile_needs")
    if needs is None:
        needs = ["compile"] if cold else []
    compile_pred = compile_s_of(ph, needs)
    step = timings.get("s_per_step")
    text = timings.get("text_s")
    first = timings.get("first_step_s")
    compiling = any(n != "none" for n in needs)
    # the first step also encodes an image-to-video job's condition video (predicted, not timed)
    condition = ph.get("condition_s") or 0.0
    compile_meas = (max(first - (text or 0.0) - condition - step, 0.0) if compiling and first is not None and step
                    else None)
    load = record.get("load_s")
    out = {
        "text_s": [ph.get("text_s"), text],
        "steps_s": [ph.get("steps_s"), step * steps if step else timings.get("denoise_s")],
        "decode_s": [ph.get("decode_s"), timings.get("decode_s")],
        "write_s": [ph.get("write_s"), timings.get("write_s")],
        "load_s": [ph.get("load_s") if cold else 0.0, load],
        "compile_s": [compile_pred, compile_meas],
    }
    warmup = record.get("compile_warmup") or {}
    if cold and warmup.get("ran") and "warmup_wait_s" in ph:
        # compiled beside the load: what the job then waited for the warm-up
        out["warmup_wait_s"] = [ph["warmup_wait_s"], warmup.get("waited_s")]
    if condition:
        out["condition_s"] = [condition, None]
    predicted_job = sum(ph.get(k, 0.0) for k in JOB_PHASES) + compile_pred
    out["job_s"] = [predicted_job, timings.get("total_s")]
    peak = record.get("peak_vram_gib")
    predicted_peak = max((plan or {}).get("peak_vram_gib", {}).values(), default=None)
    if peak is not None and predicted_peak is not None:
        out["peak_vram_gib"] = [predicted_peak, peak]
    return {k: [None if v is None else round(v, 3) for v in pair] for k, pair in out.items()}


def sidecar_for(request: GenerationRequest, frames: np.ndarray, fps: int, video_path: Path,
                timings: dict[str, float], peak_vram_bytes: int | None,
                peak_reserved_bytes: int | None = None) -> dict[str, Any]:
    """The JSON record written beside a video: every parameter, the file, timings and peak VRAM
    (``peak_reserved_bytes``: the allocator's peak, read now when not given)."""
    spec = get_spec(request.model)
    cuda = torch.cuda.is_available()
    if peak_reserved_bytes is None and cuda:
        peak_reserved_bytes = torch.cuda.max_memory_reserved()
    return {
        "app": f"wan-studio {wan_studio.__version__}",
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": spec.key,
        "model_title": spec.title,
        "demo_random_weights": spec.is_demo,
        "mode": "image-to-video" if request.image else "text-to-video",
        "request": request.to_dict(),
        "seed": request.seed,
        "video": {"file": video_path.name, "width": int(frames.shape[2]), "height": int(frames.shape[1]),
                  "frames": int(frames.shape[0]), "fps": fps,
                  "duration_s": round(frames.shape[0] / fps, 3)},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_vram_gib": round(peak_vram_bytes / 2**30, 3) if peak_vram_bytes is not None else None,
        # what the card had to hold (allocator cache included) since the run's start; a plan fits a
        # card when this stays under its size
        "peak_vram_reserved_gib": round(peak_reserved_bytes / 2**30, 3) if peak_reserved_bytes is not None else None,
    }


def _pipeline_kwargs(spec: ModelSpec, r: GenerationRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        prompt=r.prompt,
        negative_prompt=r.negative_prompt or None,
        height=r.height,
        width=r.width,
        num_frames=r.num_frames,
        num_inference_steps=r.steps,
        guidance_scale=r.guidance,
        output_type="np",
    )
    if spec.boundary is not None and r.guidance_2 is not None:
        kwargs["guidance_scale_2"] = r.guidance_2
    return kwargs
