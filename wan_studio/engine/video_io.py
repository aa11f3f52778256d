"""Writing and reading mp4 files (H.264 through imageio-ffmpeg) and JSON sidecars, atomically.

A finished video carries its sidecar's JSON in its container metadata too (the mp4 ``comment``
tag, which players and ``ffmpeg -i`` show), so its settings travel with the file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np

from wan_studio.engine.disk import disk_full_text, free_bytes


# imageio-ffmpeg starts ffmpeg with ``preexec_fn=os.setpgrp`` (to keep Ctrl-C from it), which makes
# Python fork() the worker instead of vfork(). A fork copies every page-locked (pinned) page of the
# parent at once: a worker holding an A14B's two experts pinned (~57 GB) doubled its RAM for each
# mp4 and the kernel killed it (one H200 machine, 125 GiB, 2026-12-02); an S2V-14B worker spent
# 22-28 s per mp4 on the copy. Without it, ffmpeg is started by vfork and nothing is copied; it
# shares the worker's process group, which is not the terminal's (``cluster.worker``), so a Ctrl-C
# in the app's terminal still does not reach it. A user's own setting of the variable is kept.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

# The mp4 tag holding the settings: ``comment`` (the ``\xa9cmt`` atom) is one every muxer and
# player knows, so no ``-movflags use_metadata_tags`` is needed and the text survives a remux.
SETTINGS_TAG = "comment"


class OutputWriteError(OSError):
    """The video or its sidecar could not be written; the message says why and what to do."""


class VideoReadError(ValueError):
    """A file is not a video ffmpeg can read; the message names it."""


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _discard(path: Path) -> None:
    """Remove a temp file if it exists; never raise (we are already handling an error)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _explain(e: OSError, path: Path) -> OutputWriteError:
    # The encoder runs in an ffmpeg subprocess: a full disk reaches us as a broken pipe, so the
    # free space decides.
    free = free_bytes(path.parent)
    if e.errno == errno.ENOSPC or "No space left" in str(e) or (free is not None and free < 1024 * 1024):
        return _disk_full(path)
    return OutputWriteError(e.errno or errno.EIO, f"could not write {path}: {e.strerror or e}")


def _disk_full(path: Path) -> OutputWriteError:
    return OutputWriteError(errno.ENOSPC, f"{disk_full_text(path.parent)} while writing {path.name}; free space "
                                          "and retry the job (finished windows of a long clip are kept)")


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] shaped (T, H, W, 3) to uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray | Iterable[np.ndarray], fps: int) -> Path:
    """Write uint8 frames (T, H, W, 3) as a browser-playable H.264 mp4, atomically.

    ``frames`` may be an array or any iterable of (H, W, 3) frames, so long clips stream to disk
    without holding every frame in memory. The file appears at ``path`` only when complete; a
    failure removes the partial file.
    """
    path = Path(path)
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError("no frames to write")
    h, w = first.shape[:2]
    tmp = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path, ".mp4")
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (w, h),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=8,
            macro_block_size=1,
            output_params=["-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        writer.send(np.ascontiguousarray(first))
        for frame in frame_iter:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise _explain(e, path) from e
    except BaseException as e:
        _discard(tmp)
        # imageio-ffmpeg reports a failed encoder (disk full included) as RuntimeError/BrokenPipe.
        if isinstance(e, (RuntimeError, BrokenPipeError)):
            free = free_bytes(path.parent)
            if free is not None and free < 1024 * 1024:
                raise _disk_full(path) from e
            raise OutputWriteError(errno.EIO, f"the video encoder failed writing {path.name}: {e}") from e
        raise
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as pretty JSON, atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path, ".json")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise _explain(e, path) from e
    except BaseException:
        _discard(tmp)  # e.g. text JSON cannot encode: no half-written sidecar stays behind
        raise
    return path


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    """Decode an mp4 into uint8 frames (T, H, W, 3) and its frame rate (frames per second)."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames), float(meta["fps"])


def mux_audio(video_path: Path, audio_path: Path) -> Path:
    """Add the audio of ``audio_path`` (AAC, 192 kb/s) to the mp4 at ``video_path``, in place.

    The video stream is copied, not re-encoded; the result ends with the shorter of the two
    streams. The file is replaced atomically: a failure leaves the silent video as it was.
    """
    video_path = Path(video_path)
    args = ["-i", str(video_path), "-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "192k", "-shortest", "-movflags", "+faststart"]
    return _ffmpeg_into(video_path, args, 600, f"could not add the audio to {video_path.name}")


def _ffmpeg_into(out_path: Path, args: list[str], timeout_s: float, failure: str) -> Path:
    """Run ffmpeg with ``args`` writing a temp file beside ``out_path``, then move it into place.

    A failed run leaves ``out_path`` as it was; the error says ``failure`` and ffmpeg's last words.
    """
    import subprocess

    tmp = _temp_beside(out_path, ".mp4")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-v", "error", *args, str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip()[-400:]
            raise OutputWriteError(errno.EIO, f"{failure}: {msg}")
        os.replace(tmp, out_path)
    except OSError as e:
        _discard(tmp)
        if isinstance(e, OutputWriteError):
            raise
        raise _explain(e, out_path) from e
    return out_path


def audio_duration_s(path: Path) -> float | None:
    """Seconds of the first audio stream of a media file, or ``None`` when it has none."""
    import subprocess

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-map", "0:a:0?",
           "-ac", "1", "-ar", "16000", "-f", "s16le", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=300)
    if proc.returncode != 0 or not proc.stdout:
        return None
    return len(proc.stdout) / 2 / 16000


def join_clips(clips: list[Path], out_path: Path, fps: int) -> Path:
    """Join mp4 clips one after another into ``out_path`` at ``fps``, atomically.

    Every clip is scaled to fit the first clip's frame (letterboxed, aspect kept); a clip without
    sound gets silence of its own length, so speech stays in sync after the join.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    w, h = _frame_size(clips[0])
    args: list[str] = []
    labels: list[str] = []
    filters: list[str] = []
    n_inputs = 0
    for i, clip in enumerate(clips):
        args += ["-i", str(clip)]
        video_in = n_inputs
        n_inputs += 1
        if audio_duration_s(clip) is None:
            seconds = imageio_ffmpeg.count_frames_and_secs(str(clip))[1]
            args += ["-f", "lavfi", "-t", f"{seconds:.3f}", "-i", "anullsrc=channel_layout=stereo:sample_rate=48000"]
            audio_in = n_inputs
            n_inputs += 1
        else:
            audio_in = video_in
        filters.append(f"[{video_in}:v]scale={w}:{h}:force_original_aspect_ratio=decrease,"
                       f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p[v{i}]")
        filters.append(f"[{audio_in}:a]aresample=48000,aformat=channel_layouts=stereo[a{i}]")
        labels.append(f"[v{i}][a{i}]")
    filters.append(f"{''.join(labels)}concat=n={len(clips)}:v=1:a=1[v][a]")
    args += ["-filter_complex", ";".join(filters), "-map", "[v]", "-map", "[a]", "-c:v", "libx264",
             "-crf", "18", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]
    return _ffmpeg_into(out_path, args, 1800, f"could not join the clips into {out_path.name}")


def _frame_size(path: Path) -> tuple[int, int]:
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        w, h = next(reader)["size"]
    finally:
        reader.close()
    return int(w), int(h)


def _ffmeta_escape(text: str) -> str:
    # ffmpeg's ffmetadata format: these characters are taken literally only after a backslash.
    return "".join("\\" + c if c in "=;#\\\n" else c for c in text)


def _ffmeta_global(text: str) -> dict[str, str]:
    """The global tags of an ffmetadata text (``ffmpeg -f ffmetadata`` output), unescaped."""
    tags: dict[str, str] = {}
    key: list[str] | None = None
    cur: list[str] = []
    first = True
    i = 0
    while i <= len(text):
        c = text[i] if i < len(text) else "\n"
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == "=" and key is None:
            key, cur = cur, []
        elif c == "\n":
            line_key = "".join(key) if key is not None else None
            if first:
                first = False  # the ";FFMETADATA1" header
            elif key is None and cur and cur[0] == "[":
                break  # a [STREAM] or [CHAPTER] section: the global tags are over
            elif line_key and not line_key.startswith((";", "#")):
                tags[line_key] = "".join(cur)
            key, cur = None, []
        else:
            cur.append(c)
        i += 1
    return tags


def embed_settings(video_path: Path, data: dict[str, Any]) -> Path:
    """Put ``data`` as compact JSON into the mp4's ``comment`` tag, in place and atomically.

    The streams are copied, not re-encoded; a failure leaves the video as it was. The text goes to
    ffmpeg in an ffmetadata file, not on the command line, so its length is not bounded by that.
    """
    video_path = Path(video_path)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    meta = _temp_beside(video_path, ".tmp")
    try:
        meta.write_text(f";FFMETADATA1\n{SETTINGS_TAG}={_ffmeta_escape(text)}\n", encoding="utf-8")
        args = ["-i", str(video_path), "-f", "ffmetadata", "-i", str(meta), "-map", "0", "-map_metadata", "1",
                "-c", "copy", "-movflags", "+faststart"]
        return _ffmpeg_into(video_path, args, 600, f"could not write the settings into {video_path.name}")
    except OSError as e:
        if isinstance(e, OutputWriteError):
            raise
        raise _explain(e, video_path) from e
    finally:
        _discard(meta)


def read_embedded_settings(path: Path) -> dict[str, Any] | None:
    """The JSON object in a video's ``comment`` tag, or None when it has none (or the tag is not a
    JSON object, e.g. a plain comment). Raises ``VideoReadError`` when ffmpeg cannot read the file."""
    import subprocess

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VideoReadError(f"{Path(path).name} is not a video that can be read"
                             + (f" ({why[-1][-200:]})" if why else ""))
    text = _ffmeta_global(proc.stdout.decode("utf-8", "replace")).get(SETTINGS_TAG)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_record(video_path: Path, sidecar_path: Path, data: dict[str, Any]) -> None:
    """Record a finished video's settings: ``data`` into the mp4 (``embed_settings``), then the same
    JSON as its sidecar. The sidecar comes last: its presence marks the outputs complete
    (``engine.job.finished_earlier``), so a worker killed in between leaves a job that runs again
    over the same file."""
    embed_settings(video_path, data)
    write_json(sidecar_path, data)
