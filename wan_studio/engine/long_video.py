"""Long clips: sliding windows over an image-conditioned model, blended at the seams, resumable.

Window k+1 starts from a frame of window k (``overlap`` frames before its end); the overlapping
frames of the two windows are cross-faded into one copy, so nothing repeats. Each finished window
is kept in a work folder with a manifest, so a crashed or cancelled job resumes at the first missing
window. Memory per window is that of one ordinary job of ``window_frames`` frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.checkpoint import StepCheckpoints, request_key
from wan_studio.engine.generate import Progress, ProgressFn, output_paths, render, sidecar_for
from wan_studio.engine.request import MAX_SEED, GenerationRequest, GenerationResult, RequestError
from wan_studio.engine.video_io import read_mp4, write_json, write_mp4, write_record

MAX_SECONDS = 120


@dataclass(frozen=True)
class Window:
    """One window: its index, its first frame in the final clip, and its prompt."""

    index: int
    start: int
    prompt: str


@dataclass(frozen=True)
class LongClip:
    """How a long clip is cut. Frame counts; ``window_frames`` is 4k+1, ``overlap`` ≥ 1."""

    total_frames: int
    window_frames: int
    overlap: int
    prompts: tuple[str, ...]

    @property
    def stride(self) -> int:
        """Frames between the starts of two windows."""
        return self.window_frames - self.overlap

    def windows(self) -> list[Window]:
        """The windows covering ``total_frames`` (the last one may run past the end; it is trimmed)."""
        n = 1 + max(0, -(-(self.total_frames - self.window_frames) // self.stride))
        prompts = self.prompts if len(self.prompts) == n else self.prompts[:1] * n
        return [Window(k, k * self.stride, prompts[k]) for k in range(n)]


def plan_long_clip(request: GenerationRequest, total_frames: int, overlap: int,
                   prompts: list[str] | None = None) -> LongClip:
    """Check and build the cut of a long clip for a resolved ``request`` (its frames = one window)."""
    spec = get_spec(request.model)
    if not spec.accepts_image or spec.task == "s2v":
        raise RequestError(f"{spec.title} cannot continue from a frame; long clips need an image-to-video model")
    window = request.num_frames
    if total_frames > MAX_SECONDS * request.fps:
        raise RequestError(f"a long clip is at most {MAX_SECONDS} s ({MAX_SECONDS * request.fps} frames at {request.fps} fps)")
    if total_frames < window:
        raise RequestError(f"the clip ({total_frames} frames) is shorter than one window ({window}); make a normal clip")
    if not 1 <= overlap <= window // 2:
        raise RequestError(f"overlap must be 1–{window // 2} frames for {window}-frame windows, got {overlap}")
    clip = LongClip(total_frames, window, overlap, tuple(prompts or [request.prompt]))
    n = len(clip.windows())
    if prompts is not None and len(prompts) not in (1, n):
        raise RequestError(f"this clip has {n} windows; give one prompt, or one per window ({n}), not {len(prompts)}")
    if any(not p.strip() for p in clip.prompts):
        raise RequestError("a window prompt is empty")
    return clip


def _window_request(request: GenerationRequest, window: Window) -> GenerationRequest:
    return dataclasses.replace(request, prompt=window.prompt, seed=(request.seed + window.index) % MAX_SEED,
                               image=request.image if window.index == 0 else None)


class _WorkFolder:
    """Finished windows of one long clip, with a manifest tied to the clip's parameters."""

    def __init__(self, folder: Path, request: GenerationRequest, clip: LongClip) -> None:
        self.folder = Path(folder)
        self.key = hashlib.sha256(json.dumps([request.to_dict(), dataclasses.asdict(clip)],
                                             sort_keys=True).encode()).hexdigest()[:16]
        self.manifest = self.folder / "manifest.json"
        # One thread writes the finished windows in order, off the GPU's path (``save``).
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="window-writer")
        self._pending: Future[None] | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.loads(self.manifest.read_text()) if self.manifest.exists() else {}
        self.done: list[int] = data.get("done", []) if data.get("key") == self.key else []
        if not self.done:
            for stale in self.folder.glob("window-*"):
                stale.unlink()

    def video(self, k: int) -> Path:
        return self.folder / f"window-{k:03d}.mp4"

    def next_frame(self, k: int) -> Path:
        """The exact (lossless) frame window ``k + 1`` starts from."""
        return self.folder / f"window-{k:03d}-next.png"

    def save(self, k: int, frames: np.ndarray, fps: int, stride: int) -> None:
        """Keep window ``k``: its next window's start frame now (the next render reads it), its mp4
        and then its manifest entry on the writer thread while the GPU renders the next window. At
        most one window waits to be written (the previous write's error is raised here)."""
        self.drain()
        if stride < len(frames):
            Image.fromarray(frames[stride]).save(self.next_frame(k))
        self._pending = self._writes.submit(self._keep, k, frames, fps)

    def _keep(self, k: int, frames: np.ndarray, fps: int) -> None:
        write_mp4(self.video(k), frames, fps)
        # Only once its mp4 is in place: a run stopped mid-write renders the window again.
        self.done = sorted(set(self.done) | {k})
        write_json(self.manifest, {"key": self.key, "done": self.done})

    def drain(self) -> None:
        """Wait for the window being written; raise its error (a full disk) if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish the window being written (its error, if any, stays unraised) and stop the thread."""
        self._writes.shutdown(wait=True)


def blended_frames(videos: list[Path], clip: LongClip) -> Iterator[np.ndarray]:
    """Stream the final frames: each overlap cross-faded once, then trimmed to ``total_frames``."""
    emitted = 0
    held: np.ndarray | None = None  # the previous window's last ``overlap`` frames
    for k, path in enumerate(videos):
        frames, _ = read_mp4(path)
        body = frames
        if held is not None:
            ramp = (np.arange(1, clip.overlap + 1) / (clip.overlap + 1))[:, None, None, None]
            seam = (held * (1 - ramp) + frames[: clip.overlap] * ramp + 0.5).astype(np.uint8)
            body = np.concatenate([seam, frames[clip.overlap:]])
        last = k == len(videos) - 1
        out, held = (body, None) if last else (body[: -clip.overlap], body[-clip.overlap:].astype(np.float32))
        for frame in out:
            if emitted == clip.total_frames:
                return
            emitted += 1
            yield frame


def generate_long(
    pipe: Any,
    request: GenerationRequest,
    clip: LongClip,
    work_dir: Path,
    outputs_dir: Path,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    between_steps: Callable[[int], None] | None = None,
    extra_sidecar: dict[str, Any] | None = None,
    paths: tuple[Path, Path] | None = None,
    step_checkpoints: bool = False,
    preview: Any = None,
    write_later: Callable[[Callable[[], GenerationResult]], None] | None = None,
) -> GenerationResult:
    """Make a long clip window by window, resuming from ``work_dir`` where a run left off (at
    the first missing window, and with ``step_checkpoints`` at that window's last kept step).

    Each window's mp4 is written on a thread of the clip's own while the next window renders.
    ``write_later`` (as in ``generate``) receives the clip's assembly (the seams blended into the
    final mp4, then its sidecar) once the last window is decoded, instead of it running here.

    Raises ``GenerationCancelled`` like ``generate``; finished windows stay for the next run.
    """
    report = on_progress or (lambda p: None)
    work = _WorkFolder(work_dir, request, clip)
    windows = clip.windows()
    resumed = [w.index for w in windows if w.index in work.done and work.video(w.index).exists()]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    resumed_steps: dict[int, int] = {}  # window -> the step its checkpoint let it start after
    peaks: list[int] = []  # each window's peak allocated VRAM, bytes (render resets it per window)
    ran: dict[str, Any] = {}  # sampler and noise of the windows made in this run
    started_at = time.time()
    try:
        for window in windows:
            if window.index in resumed:
                continue
            start_image = None
            if window.index > 0:
                work.drain()  # the previous window's start frame and mp4 are in place
                start_image = Image.open(work.next_frame(window.index - 1)).convert("RGB")

            def in_window(p: Progress, k: int = window.index) -> None:
                report(dataclasses.replace(p, window=k, windows=len(windows)))

            window_request = _window_request(request, window)
            steps_kept = (StepCheckpoints(work.folder, request_key(window_request.to_dict()),
                                          name=f"steps-window-{window.index:03d}") if step_checkpoints else None)
            if preview is not None:
                preview.new_window()
            done = render(pipe, window_request, in_window, cancel, between_steps, start_image, steps_kept,
                          preview=preview)
            work.save(window.index, done.frames, request.fps, clip.stride)
            if steps_kept is not None:
                steps_kept.remove()
                if done.resumed_from is not None:
                    resumed_steps[window.index] = done.resumed_from
            ran = {"sampler": done.sampler, "noise": done.noise.record() if done.noise else None}
            for key, value in done.timings.items():
                timings[key] = timings.get(key, 0.0) + value
            if done.peak_vram_bytes is not None:
                peaks.append(done.peak_vram_bytes)
    except BaseException:
        work.close()  # a window being written is kept for the next run
        raise
    t_decoded = time.perf_counter()
    decoded_at = time.time()
    report(Progress("writing", request.steps, request.steps, t_decoded - t0, window=len(windows) - 1,
                    windows=len(windows)))
    video_path, sidecar_path = output_paths(outputs_dir, request, paths)
    peak = max(peaks) if peaks else None
    # Read now: the pipeline is lent to the next job during a background assembly.
    speed = dict(pipe.wan_speed) if getattr(pipe, "wan_speed", None) else None
    peak_reserved = torch.cuda.max_memory_reserved() if torch.cuda.is_available() else None

    def write() -> GenerationResult:
        t_write = time.perf_counter()
        try:
            work.drain()  # the last window's mp4
        finally:
            work.close()
        write_mp4(video_path, blended_frames([work.video(w.index) for w in windows], clip), request.fps)
        write_s = time.perf_counter() - t_write
        final = {**timings, "write_s": write_s, "total_s": t_decoded - t0 + write_s}
        frames_meta = np.zeros((clip.total_frames, request.height, request.width, 0), np.uint8)
        sidecar = sidecar_for(request, frames_meta, request.fps, video_path, final, peak, peak_reserved)
        if speed:  # attention kernel and compile, as for a single clip
            sidecar["speed"] = speed
        sidecar["clock"] = {"started_at": round(started_at, 3), "decoded_at": round(decoded_at, 3),
                            "written_at": round(time.time(), 3),
                            "mp4_written": "off the GPU's path" if write_later is not None else "in line"}
        sidecar["long_clip"] = {"total_frames": clip.total_frames, "window_frames": clip.window_frames,
                                "overlap": clip.overlap, "windows": len(windows),
                                "prompts": [w.prompt for w in windows], "resumed_windows": resumed,
                                "resumed_steps": resumed_steps}
        sidecar.update(ran)
        write_record(video_path, sidecar_path, {**sidecar, **(extra_sidecar or {})})
        report(Progress("done", request.steps, request.steps, final["total_s"], window=len(windows) - 1,
                        windows=len(windows)))
        return GenerationResult(video_path, sidecar_path, request, final, peak)

    if write_later is not None:
        write_later(write)
        return GenerationResult(video_path, sidecar_path, request, dict(timings), peak)
    return write()
