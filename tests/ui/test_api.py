"""Scripts drive the app through gradio_client against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from wan_studio.engine.video_io import read_mp4


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


def test_generate_endpoint_returns_an_mp4(client: Client, server):
    video, files, params, status = client.predict("a paper boat on a river", None, "demo-fast", 42,
                                                  api_name="/generate")
    path = Path(video["video"] if isinstance(video, dict) else video)
    frames, fps = read_mp4(path)
    assert frames.shape == (17, 256, 256, 3) and fps == 8
    assert params["seed"] == 42 and params["request"]["prompt"] == "a paper boat on a river"
    assert "seed 42" in status
    # The original stays in the outputs folder with its sidecar.
    saved = list(server.outputs.rglob("*.mp4"))
    assert any(p.name == params["video"]["file"] for p in saved)
    assert any(Path(f).suffix == ".json" and json.loads(Path(f).read_text())["seed"] == 42 for f in files)


def test_generate_with_an_image(client: Client, image_file: Path):
    video, _files, params, _status = client.predict("the scene comes alive", handle_file(str(image_file)),
                                                     "demo-fast", 1, api_name="/generate")
    assert params["mode"] == "image-to-video"
    frames, _ = read_mp4(Path(video["video"] if isinstance(video, dict) else video))
    assert frames.shape[0] == 17


def test_bad_request_comes_back_as_a_readable_error(client: Client):
    with pytest.raises(AppError, match="prompt is empty"):
        client.predict("   ", None, "demo-fast", 1, api_name="/generate")


def test_missing_model_error_names_the_download_command(client: Client):
    with pytest.raises(AppError, match="--download ti2v-5b"):
        client.predict("a fox", None, "beginner-720p-5s", 1, api_name="/generate")


def test_unknown_preset(client: Client):
    with pytest.raises(AppError, match="ultra-8k is not in the list of choices"):
        client.predict("a fox", None, "ultra-8k", 1, api_name="/generate")
