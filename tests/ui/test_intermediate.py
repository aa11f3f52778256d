"""Intermediate workflow: scene clip + talking clip (+ join) through the service and a real
Gradio server on 127.0.0.1, with the built-in demo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_studio.engine.request import RequestError
from wan_studio.engine.s2v.audio_io import write_wav
from wan_studio.engine.video_io import audio_duration_s, read_mp4
from wan_studio.ui.intermediate import MODES, build_requests

DEMO = "Demo · CPU, random weights"


def _speech(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return write_wav(path, 0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)))


def _portrait(path: Path) -> Path:
    Image.fromarray(np.full((240, 180, 3), 150, np.uint8)).save(path)
    return path


def test_real_mode_uses_official_pairing() -> None:
    real = MODES["720p · 10 s (TI2V-5B + S2V-14B)"]
    assert real["scene"]["model"] == "ti2v-5b" and real["scene"]["num_frames"] == 241  # 10 s at 24 fps
    assert real["talk"]["model"] == "s2v-14b"


def test_bad_speech_is_refused_before_the_scene_runs(studio, tmp_path: Path) -> None:
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    scene, talk = build_requests(DEMO, "a lake", None, str(_portrait(tmp_path / "p.png")), str(silent), "", 1)
    with pytest.raises(RequestError, match="silent"):
        studio.run_scene_and_talk(scene, talk, join=True)
    assert not list(studio.settings.outputs_dir.rglob("*.mp4"))


def test_scene_and_talk_joined_over_the_api(studio, tmp_path: Path) -> None:
    import gradio_client

    from wan_studio.ui.blocks import build_app, launch_kwargs

    app = build_app(studio)
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
               **launch_kwargs(studio))
    try:
        client = gradio_client.Client(app.local_url, verbose=False)
        joined, scene, talk, params, status = client.predict(
            DEMO, "a calm lake", None, gradio_client.handle_file(str(_portrait(tmp_path / "p.png"))),
            gradio_client.handle_file(str(_speech(tmp_path / "s.wav", 1.0))), "a person talks", True, 5,
            api_name="/intermediate")
    finally:
        app.close()
    assert status.startswith("Done")
    assert params["talk"]["chunks"] == 1 and params["talk"]["demo_random_weights"] is True
    scene_frames, scene_fps = read_mp4(Path(scene["video"] if isinstance(scene, dict) else scene))
    joined_path = Path(joined["video"] if isinstance(joined, dict) else joined)
    frames, fps = read_mp4(joined_path)
    talk_s = params["talk"]["video"]["duration_s"]
    assert abs(len(frames) / fps - (len(scene_frames) / scene_fps + talk_s)) < 0.15
    # The speech is in the join, after the silent scene.
    assert audio_duration_s(joined_path) == pytest.approx(len(frames) / fps, abs=0.15)


def test_with_two_workers_the_scene_and_the_talking_clip_run_at_the_same_time(settings, tmp_path: Path) -> None:
    """Two GPU workers (here two CPU worker processes): one model per worker, both clips at once."""
    import dataclasses
    import time

    from wan_studio.services import Studio

    studio = Studio.create(dataclasses.replace(settings, workers=2))
    try:
        studio.start()
        deadline = time.monotonic() + 120
        while len(studio.queue.executor.idle_workers()) < 2:
            assert time.monotonic() < deadline, "the two workers never started"
            time.sleep(0.2)
        seen: set[tuple[str, str]] = set()
        scene, talk = build_requests(DEMO, "a calm lake", None, str(_portrait(tmp_path / "p.png")),
                                     str(_speech(tmp_path / "s.wav", 1.0)), "", 3)
        result = studio.run_scene_and_talk(scene, talk, join=False,
                                           on_progress=lambda part, p: seen.add((part, p.stage)))
        jobs = {j.request["model"]: j for j in studio.queue.store.list()}
    finally:
        studio.close()
    assert result.scene.video_path.exists() and result.talk.video_path.exists()
    a, b = jobs["demo"], jobs["demo-s2v"]
    assert a.worker != b.worker  # one model per worker
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # the two ran side by side
    assert ("scene", "denoising") in seen and ("talk", "denoising") in seen


def test_when_one_part_fails_the_other_is_cancelled_and_the_reason_shown(studio, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from wan_studio.engine import generate as generate_module
    from wan_studio.services import JobFailed

    def broken(*_a, **_k):
        raise RuntimeError("the scene model broke")

    monkeypatch.setattr(generate_module, "render", broken)
    scene, talk = build_requests(DEMO, "a calm lake", None, str(_portrait(tmp_path / "p.png")),
                                 str(_speech(tmp_path / "s.wav", 1.0)), "", 4)
    with pytest.raises(JobFailed, match="scene: RuntimeError: the scene model broke"):
        studio.run_scene_and_talk(scene, talk, join=True)
    # One worker: the talking part was still queued, and the queue cancelled it in the event that
    # failed the scene, before the worker was free to start it. Nothing to wait for.
    jobs = {j.request["model"]: j for j in studio.queue.store.list()}
    assert {m: j.status for m, j in jobs.items()} == {"demo": "failed", "demo-s2v": "cancelled"}
    assert jobs["demo-s2v"].started_at is None and jobs["demo-s2v"].attempts == 0
    assert "failed" in (jobs["demo-s2v"].error or "")
    assert not list(studio.settings.outputs_dir.rglob("*.mp4"))
