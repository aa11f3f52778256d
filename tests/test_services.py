"""The Studio service: runs requests, refuses missing models clearly, cancels by owner."""

from __future__ import annotations

import threading

import pytest

from wan_studio.engine.generate import GenerationCancelled
from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.services import ModelUnavailable


def test_runs_a_preset_request_and_keeps_the_model_loaded(studio):
    req = studio.presets["demo-fast"].request("a kite", seed=1, num_frames=9, steps=2)
    result = studio.run(req)
    assert result.video_path.exists() and result.video_path.parent.parent == studio.settings.outputs_dir
    assert studio.manager.loaded() == {"demo": "cpu"}


def test_missing_model_is_refused_with_the_download_command(studio):
    with pytest.raises(ModelUnavailable, match="python app.py --download ti2v-5b"):
        studio.run(GenerationRequest(prompt="x", model="ti2v-5b"))


def test_invalid_request_is_refused_before_loading(studio):
    with pytest.raises(RequestError, match="prompt is empty"):
        studio.run(GenerationRequest(prompt="", model="demo"))
    assert studio.manager.loaded() == {}


def test_cancel_from_another_thread_stops_only_that_owners_job(studio):
    req = studio.presets["demo-fast"].request("a kite", seed=1, num_frames=9, steps=40)
    started = threading.Event()

    def progress(p):
        if p.stage == "denoising":
            started.set()

    errors: list[BaseException] = []

    def work():
        try:
            studio.run(req, owner="alice", on_progress=progress)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(30)
    assert studio.cancel("bob") is False
    assert studio.cancel("alice") is True
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], GenerationCancelled)
    assert not any(studio.settings.outputs_dir.rglob("*.mp4"))
