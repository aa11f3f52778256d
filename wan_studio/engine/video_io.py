"""Writing and reading mp4 files (H.264 through imageio-ffmpeg) and JSON sidecars, atomically."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np


class OutputWriteError(OSError):
    """The video or its sidecar could not be written; the message says why and what to do."""


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _explain(e: OSError, path: Path) -> OutputWriteError:
    # The encoder runs in an ffmpeg subprocess: a full disk reaches us as a broken pipe, so the
    # free space decides.
    free = _free_bytes(path.parent)
    if e.errno == errno.ENOSPC or "No space left" in str(e) or (free is not None and free < 1024 * 1024):
        return OutputWriteError(errno.ENOSPC, f"the disk is full while writing {path.name}; free space in {path.parent} and try again")
    return OutputWriteError(e.errno or errno.EIO, f"could not write {path}: {e.strerror or e}")


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] shaped (T, H, W, 3) to uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> Path:
    """Write uint8 frames (T, H, W, 3) as a browser-playable H.264 mp4, atomically.

    The file appears at ``path`` only when complete; a failure removes the partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    tmp = _temp_beside(path, ".mp4")
    try:
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
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _explain(e, path) from e
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        # imageio-ffmpeg reports a failed encoder (disk full included) as RuntimeError/BrokenPipe.
        if isinstance(e, (RuntimeError, BrokenPipeError)):
            free = _free_bytes(path.parent)
            if free is not None and free < 1024 * 1024:
                raise OutputWriteError(errno.ENOSPC, f"the disk is full while writing {path.name}; free space in {path.parent} and try again") from e
            raise OutputWriteError(errno.EIO, f"the video encoder failed writing {path.name}: {e}") from e
        raise
    return path


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as pretty JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, ".json")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _explain(e, path) from e
    return path


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    """Decode an mp4 into uint8 frames (T, H, W, 3) and its frame rate (frames per second)."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames), float(meta["fps"])
