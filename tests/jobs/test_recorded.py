"""'Load these settings' from a video: from inside a new mp4, from the sidecar of an older one, and a
refusal in words for a video this app did not make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wan_studio.engine.video_io import embed_settings, write_json, write_mp4
from wan_studio.jobs.access import Caller
from wan_studio.jobs.recorded import NoRecordedSettings, settings_of_video, sidecars_of_same_video
from wan_studio.jobs.store import JobStore, RestoredJob

REQUEST = {"prompt": "a red kite", "model": "demo", "width": 64, "height": 64, "num_frames": 5, "fps": 8,
           "steps": 2, "seed": 77}


def _made_here(folder: Path, name: str = "101500-demo-77-ab12", embedded: bool = True) -> tuple[Path, Path]:
    """An mp4 and its sidecar as the app writes them (``embedded=False``: as it did before videos carried
    their settings)."""
    video = write_mp4(folder / f"{name}.mp4", np.full((3, 32, 32, 3), 60, np.uint8), 8)
    record = {"app": "wan-studio 0.9", "model": "demo", "request": REQUEST, "seed": 77,
              "video": {"file": video.name, "frames": 3}}
    if embedded:
        embed_settings(video, record)
    return video, write_json(video.with_suffix(".json"), record)


def test_a_new_mp4_gives_its_settings_without_its_sidecar(tmp_path: Path) -> None:
    video, _ = _made_here(tmp_path)
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    copy = Path(shutil.copy(video, elsewhere / "my clip.mp4"))
    got = settings_of_video(copy)
    assert got.source == "video" and got.request == REQUEST


def test_an_old_mp4_falls_back_to_the_sidecar_beside_it(tmp_path: Path) -> None:
    video, sidecar = _made_here(tmp_path, embedded=False)
    got = settings_of_video(video)
    assert got.source == "sidecar" and got.where == sidecar and got.request["seed"] == 77


def test_an_uploaded_copy_of_an_old_mp4_finds_the_sidecar_of_the_job_that_made_it(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    video, sidecar = _made_here(outputs, embedded=False)
    upload = tmp_path / "gradio-cache" / video.name
    upload.parent.mkdir()
    shutil.copy(video, upload)
    store = JobStore(tmp_path / "jobs.db")
    try:
        store.restore_done([RestoredJob("job1", REQUEST, [str(video), str(sidecar)], 0.0, user="ana", owner="s1")])
        ana, bo = Caller("ana", "s1"), Caller("bo", "s2")
        assert sidecars_of_same_video(store, ana, upload) == [sidecar]
        assert settings_of_video(upload, sidecars_of_same_video(store, ana, upload)).request["prompt"] == "a red kite"
        # Another user's job is not offered: its prompt is theirs.
        with pytest.raises(NoRecordedSettings, match="no sidecar of it"):
            settings_of_video(upload, sidecars_of_same_video(store, bo, upload))
        # Same name, other bytes: not the same video.
        write_mp4(upload, np.zeros((3, 32, 32, 3), np.uint8), 8)
        assert sidecars_of_same_video(store, ana, upload) == []
    finally:
        store.close()


def test_a_foreign_mp4_is_refused_in_words(tmp_path: Path) -> None:
    other = write_mp4(tmp_path / "comfy.mp4", np.zeros((2, 16, 16, 3), np.uint8), 8)
    embed_settings(other, {"prompt": {"3": {"class_type": "KSampler"}}, "workflow": {}})
    with pytest.raises(NoRecordedSettings, match="was not made by Wan Studio"):
        settings_of_video(other)
    bare = write_mp4(tmp_path / "phone.mp4", np.zeros((2, 16, 16, 3), np.uint8), 8)
    with pytest.raises(NoRecordedSettings, match="carries no Wan Studio settings"):
        settings_of_video(bare)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video", encoding="utf-8")
    with pytest.raises(NoRecordedSettings, match="is not a video that can be read"):
        settings_of_video(text)
    # A sidecar beside it that names another video does not stand in for this one.
    bare.with_suffix(".json").write_text(json.dumps({"app": "wan-studio 0.9", "request": REQUEST,
                                                     "video": {"file": "other.mp4"}}), encoding="utf-8")
    with pytest.raises(NoRecordedSettings):
        settings_of_video(bare)
