"""Checks of the picture and pose video a speech-to-video job starts from.

Face detection is not done (it would need another model); the checks refuse what cannot work:
unreadable files, images too small to hold a face at the output size, and strips or panoramas
whose aspect no supported size (9:16 to 16:9) can keep without cutting most of the picture away.
"""

from __future__ import annotations

from pathlib import Path


from wan_studio.engine.request import RequestError, check_image

MIN_PORTRAIT_SIDE = 128
MAX_PORTRAIT_ASPECT = 2.2  # long side / short side


def check_portrait(path: str | Path) -> tuple[int, int]:
    """Return the (width, height) in pixels of a usable portrait, or raise ``RequestError``."""
    w, h = check_image(path)
    if min(w, h) < MIN_PORTRAIT_SIDE:
        raise RequestError(f"the portrait is {w}×{h}; speech-to-video needs at least {MIN_PORTRAIT_SIDE} pixels "
                           "on each side — use a larger photo of the face or upper body")
    aspect = max(w, h) / min(w, h)
    if aspect > MAX_PORTRAIT_ASPECT:
        shape = "wide panorama" if w > h else "tall strip"
        raise RequestError(f"the picture is a {shape} ({w}×{h}, {aspect:.1f}:1); speech-to-video needs a portrait "
                           f"(a face or upper body) no more than {MAX_PORTRAIT_ASPECT}:1 — crop it around the person")
    return w, h


def check_pose_video(path: str | Path) -> None:
    """Refuse a missing or unreadable pose video with a message that says so."""
    import imageio_ffmpeg

    p = Path(path)
    if not p.is_file():
        raise RequestError(f"the pose video {p.name!r} does not exist")
    try:
        reader = imageio_ffmpeg.read_frames(str(p))
        meta = next(reader)
        next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise RequestError(f"the pose video {p.name!r} cannot be read ({type(e).__name__}); use an MP4 file") from None
    if not meta.get("fps"):
        raise RequestError(f"the pose video {p.name!r} has no frame rate; export it again as MP4")
