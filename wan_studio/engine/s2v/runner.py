"""Run one validated speech-to-video request: chunks with progress and cancel, mp4 with the
speech muxed in, JSON sidecar. Called by ``engine.generate.generate`` for S2V models."""

from __future__ import annotations

import datetime as _dt
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

import wan_studio
from wan_studio.catalog.specs import get_spec
from wan_studio.engine.decode import DecodeProgress, decode_pieces
from wan_studio.engine.generate import (GenerationCancelled, Progress, ProgressFn, output_paths,
                                        prediction_beside_measured)
from wan_studio.engine.preview import sampler_x0
from wan_studio.engine.request import GenerationRequest, GenerationResult
from wan_studio.engine.s2v.audio_io import AudioError, load_speech
from wan_studio.engine.s2v.pipeline import S2VPipeline, chunks_for
from wan_studio.engine.sampler import sampler_record
from wan_studio.engine.video_io import frames_to_uint8, mux_audio, read_mp4, write_mp4, write_record

CHUNK_FRAMES = 80
_FRAMES_SEEN: dict[tuple[str, float, int, int], int] = {}


def speech_frames(audio: str | Path, fps: int) -> int:
    """Video frames the speech in ``audio`` lasts at ``fps`` (the clip ``generate_s2v`` writes);
    0 when the file cannot be read (its job's validation says why). Remembered per file version,
    since the planner asks for it more than once per job."""
    p = Path(audio)
    try:
        st = p.stat()
    except OSError:
        return 0
    key = (str(p), st.st_mtime, st.st_size, fps)
    if key not in _FRAMES_SEEN:
        try:
            _FRAMES_SEEN[key] = load_speech(p).frames(fps)
        except AudioError:
            return 0
    return _FRAMES_SEEN[key]


def speech_chunks(audio: str | Path, fps: int, chunk_frames: int = CHUNK_FRAMES) -> int:
    """Chunks of ``chunk_frames`` a job makes for the speech in ``audio`` at ``fps`` (as
    ``generate_s2v`` counts them); 1 when the file cannot be read."""
    frames = speech_frames(audio, fps)
    return chunks_for(frames, chunk_frames) if frames else 1


def read_pose_video(path: str | Path, fps: int, max_frames: int) -> np.ndarray:
    """Frames of a pose video resampled to ``fps`` (nearest frame), at most ``max_frames``: uint8 (T, H, W, 3)."""
    frames, src_fps = read_mp4(Path(path))
    count = min(max_frames, int(len(frames) / src_fps * fps))
    idx = np.minimum(np.round(np.arange(count) * src_fps / fps).astype(np.int64), len(frames) - 1)
    return frames[idx]


def generate_s2v(
    pipe: S2VPipeline,
    request: GenerationRequest,
    outputs_dir: Path,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    extra_sidecar: dict[str, Any] | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    between_steps: Callable[[int], None] | None = None,
    paths: tuple[Path, Path] | None = None,
    preview: Any = None,
    write_later: Callable[[Callable[[], GenerationResult]], None] | None = None,
) -> GenerationResult:
    """Make the talking video of a validated, resolved S2V ``request``; write mp4 (with audio) + sidecar.

    ``request.width × request.height`` is the pixel budget; the frame follows the portrait's
    aspect. Raises ``GenerationCancelled`` from the step after ``cancel`` is set;
    ``between_steps(done_steps)`` runs before the first step (with 0) and after each step (the
    thermal guard may wait there).
    ``preview`` (an ``engine.preview.LivePreview``) is offered the sampler's x0 prediction after
    each step. ``write_later``, as in ``engine.generate.generate``, takes the write (mp4, the speech
    muxed in, then the sidecar) off the caller's path once the frames are in host memory.
    """
    spec = get_spec(request.model)
    report = on_progress or (lambda p: None)
    cancel = cancel or threading.Event()
    cuda = torch.cuda.is_available()
    if cuda:  # the sidecar's peak is this job's, not the worker's highest so far
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    speech = load_speech(request.audio)
    fps = request.fps
    chunks = chunks_for(speech.frames(fps), chunk_frames)
    total = chunks * request.steps
    pose = read_pose_video(request.pose_video, fps, chunks * chunk_frames) if request.pose_video else None
    step_ends: list[float] = []
    step_chunks: list[int] = []

    def on_step(chunk: int, _chunks: int, step: int, steps: int) -> None:
        step_ends.append(time.perf_counter())
        step_chunks.append(chunk)
        done = chunk * steps + step
        if preview is not None:
            if step == 1:
                preview.new_window()  # each chunk starts from its own noise
            # The chunk's latents stay inside the pipeline; its UniPC sampler holds the x0 prediction.
            x0 = sampler_x0(pipe.scheduler)
            if x0 is not None:
                preview.offer(done, x0, pipe.scheduler)
        eta = None
        if len(step_ends) >= 2:
            eta = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) * (total - done)
        report(Progress("denoising", done, total, step_ends[-1] - t0, eta))
        if between_steps is not None:
            between_steps(done)
        if cancel.is_set():
            raise GenerationCancelled(f"cancelled after step {done} of {total}")

    def on_piece(done: int, pieces: int, spent_s: float) -> None:
        report(Progress("decoding", total, total, time.perf_counter() - t0, spent_s / done * (pieces - done),
                        decoded=done / pieces))

    decoding = DecodeProgress(on_piece)

    decode_started: list[float] = []

    def on_decode(chunk: int, latent_shape: tuple[int, ...]) -> None:
        # Earlier chunks decode between denoising steps; the last one's decode ends the job.
        if chunk == chunks - 1:
            decode_started.append(time.perf_counter())
            report(Progress("decoding", total, total, time.perf_counter() - t0))
            decoding.expect(decode_pieces(pipe.vae, latent_shape))

    if cancel.is_set():
        raise GenerationCancelled("cancelled before start")
    report(Progress("encoding", 0, total, 0.0))
    with Image.open(request.image) as im:
        image = im.convert("RGB")
    if between_steps is not None:
        between_steps(0)  # a GPU already hot waits before the first step, as in ``generate.render``
    if cancel.is_set():
        raise GenerationCancelled(f"cancelled before step 1 of {total}")
    with decoding.watch(pipe.vae):
        out = pipe(image, speech.samples, prompt=request.prompt, negative_prompt=request.negative_prompt or "",
                   pose_video=pose, max_area=request.width * request.height, fps=fps, chunk_frames=chunk_frames,
                   num_inference_steps=request.steps, guidance_scale=request.guidance, shift=request.shift,
                   seed=request.seed, callback=on_step, on_decode=on_decode)
    t_decoded = time.perf_counter()
    report(Progress("writing", total, total, t_decoded - t0))
    video_path, sidecar_path = output_paths(outputs_dir, request, paths)
    timings: dict[str, float] = {"denoise_s": (step_ends[-1] - t0) if step_ends else 0.0}
    timings.update(step_timings(step_ends, step_chunks))
    # As a single job's: from the job's start to its first step's end, text encoding included; what
    # ran before that step is also given part by part.
    timings.update(out.prepare)
    if step_ends:
        timings["first_step_s"] = step_ends[0] - t0
    if decode_started:  # the last chunk's decode, the one nothing else overlaps
        timings["decode_s"] = t_decoded - decode_started[-1]
    # Read now: during a background write the next job runs on this GPU and this pipeline.
    peak = torch.cuda.max_memory_allocated() if cuda else None
    device = torch.cuda.get_device_name() if cuda else "cpu"
    sampler = sampler_record(pipe.scheduler, out.timesteps)

    def write() -> GenerationResult:
        t_write = time.perf_counter()
        frames = frames_to_uint8(out.frames)
        write_mp4(video_path, frames, fps)
        t_video = time.perf_counter()
        mux_audio(video_path, speech.source)
        t_written = time.perf_counter()
        done = {**timings, "mp4_s": t_video - t_write, "mux_s": t_written - t_video, "write_s": t_written - t_write,
                "total_s": t_decoded - t0 + t_written - t_write}
        sidecar = {
            "app": f"wan-studio {wan_studio.__version__}",
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "model": spec.key, "model_title": spec.title, "mode": "speech-to-video",
            "demo_random_weights": spec.is_demo,
            "request": request.to_dict(), "seed": request.seed,
            "audio": {"file": Path(request.audio).name, "duration_s": round(speech.duration_s, 3)},
            "chunks": out.chunks, "chunk_frames": chunk_frames, "pose": bool(request.pose_video),
            "sampler": sampler,
            "noise": out.noise.record() if out.noise else None,
            "video": {"file": video_path.name, "width": out.width, "height": out.height, "frames": int(frames.shape[0]),
                      "fps": fps, "duration_s": round(frames.shape[0] / fps, 3)},
            "timings": {k: round(v, 3) for k, v in done.items()},
            "device": device,
            "peak_vram_gib": round(peak / 2**30, 3) if peak is not None else None,
            "mp4_written": "off the GPU's path" if write_later is not None else "in line",
            **(extra_sidecar or {}),
        }
        beside = prediction_beside_measured(sidecar.get("plan"), done, sidecar, total)
        if beside:
            sidecar["predicted_vs_measured"] = beside
        write_record(video_path, sidecar_path, sidecar)
        report(Progress("done", total, total, done["total_s"]))
        return GenerationResult(video_path, sidecar_path, request, done, peak)

    if write_later is not None:
        write_later(write)
        return GenerationResult(video_path, sidecar_path, request, dict(timings), peak)
    return write()


def step_timings(ends: list[float], chunks: list[int]) -> dict[str, float]:
    """``s_per_step``: the mean time between two steps of one chunk; between chunks the previous
    chunk is decoded and the motion frames encoded, which ``chunk_gap_s`` times apart (the mean
    time from a chunk's last step to the next chunk's first, that step included)."""
    inside = [b - a for a, b, ca, cb in zip(ends, ends[1:], chunks, chunks[1:]) if ca == cb]
    across = [b - a for a, b, ca, cb in zip(ends, ends[1:], chunks, chunks[1:]) if ca != cb]
    out: dict[str, float] = {}
    if inside:
        out["s_per_step"] = sum(inside) / len(inside)
    if across:
        out["chunk_gap_s"] = sum(across) / len(across)
    return out
