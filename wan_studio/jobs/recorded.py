"""The settings a finished video was made with, read back from the video itself or, for a video made
before videos carried them, from its sidecar.

A video made here holds its sidecar's JSON in its container metadata (``engine.video_io``). An older
one holds nothing: its sidecar beside it, or the sidecar of the job in the outputs folder that made
exactly this file, stands in. A browser upload arrives as a copy in Gradio's cache under its
original name, so the app looks the job up by that name and compares the bytes; it offers only jobs
the caller may open (another user's prompt is theirs).
"""

from __future__ import annotations

import filecmp
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from wan_studio.engine.video_io import VideoReadError, read_embedded_settings
from wan_studio.jobs.access import Caller, may_act
from wan_studio.jobs.store import JobStore


class NoRecordedSettings(ValueError):
    """A video's settings cannot be found; the message says why, for the user."""


@dataclass(frozen=True)
class RecordedSettings:
    """A video's record (the sidecar's JSON), ``source`` says where it was read: inside the video or
    from the sidecar at ``where``."""

    data: dict[str, Any]
    source: Literal["video", "sidecar"]
    where: Path

    @property
    def request(self) -> dict[str, Any]:
        """The request the video was made from (``GenerationRequest.to_dict`` fields)."""
        return self.data["request"]


def is_wan_studio_record(data: Any) -> bool:
    """True for a record this app wrote: it names the app and holds the request."""
    return isinstance(data, dict) and str(data.get("app", "")).startswith("wan-studio") \
        and isinstance(data.get("request"), dict)


def _sidecar_of(video: Path, candidate: Path) -> dict[str, Any] | None:
    """``candidate``'s record when it is a Wan Studio sidecar of a video called like ``video``."""
    try:
        data = json.loads(Path(candidate).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not is_wan_studio_record(data):
        return None
    named = data.get("video", {}).get("file") if isinstance(data.get("video"), dict) else None
    return data if named == video.name else None


def settings_of_video(video: Path, sidecars: Iterable[Path] = ()) -> RecordedSettings:
    """The settings of ``video``: from its metadata, else from its sidecar (the ``.json`` beside it,
    then each of ``sidecars``). Raises ``NoRecordedSettings`` in words when there are none."""
    video = Path(video)
    if not video.is_file():
        raise NoRecordedSettings(f"{video.name}: no such file")
    try:
        embedded = read_embedded_settings(video)
    except VideoReadError as e:
        raise NoRecordedSettings(f"{e}; drop an mp4 made by Wan Studio") from None
    if embedded is not None and is_wan_studio_record(embedded):
        return RecordedSettings(embedded, "video", video)
    for candidate in (video.with_suffix(".json"), *sidecars):
        data = _sidecar_of(video, candidate)
        if data is not None:
            return RecordedSettings(data, "sidecar", Path(candidate))
    if embedded is not None:
        raise NoRecordedSettings(f"{video.name} was not made by Wan Studio: the settings in it come from another "
                                 "program, and this app cannot load them")
    raise NoRecordedSettings(f"{video.name} carries no Wan Studio settings, and no sidecar of it "
                             f"({video.stem}.json) was found beside it or among your finished jobs; only a video "
                             "made by Wan Studio can be loaded (one made before videos carried their settings "
                             "needs its sidecar)")


def sidecars_of_same_video(store: JobStore, caller: Caller, video: Path) -> list[Path]:
    """Sidecars of the finished jobs ``caller`` may open whose mp4 has ``video``'s name and bytes."""
    video = Path(video)
    found = []
    for job in store.done_with_output(video.name):
        if not may_act(caller, job):
            continue
        mp4 = next((Path(o) for o in job.outputs if Path(o).name == video.name), None)
        sidecar = next((Path(o) for o in job.outputs if o.endswith(".json")), None)
        try:
            same = mp4 is not None and mp4.is_file() and filecmp.cmp(mp4, video, shallow=False)
        except OSError:
            same = False
        if same and sidecar is not None:
            found.append(sidecar)
    return found
