"""A finished mp4 carries its sidecar's JSON in its container metadata, and it reads back the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wan_studio.engine.generate import generate
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.engine.video_io import embed_settings, read_embedded_settings, read_mp4, write_mp4


def test_a_generated_mp4_holds_the_same_json_as_its_sidecar(demo_pipe, tmp_path: Path) -> None:
    r = validate(GenerationRequest(prompt="a kite over dunes", model="demo", width=64, height=64, num_frames=5,
                                   fps=8, steps=2, seed=21))
    result = generate(demo_pipe, r, tmp_path, extra_sidecar={"placement": "cpu"})
    sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
    assert read_embedded_settings(result.video_path) == sidecar
    assert sidecar["request"]["prompt"] == "a kite over dunes" and sidecar["seed"] == 21
    frames, fps = read_mp4(result.video_path)  # still a playable video of the same frames
    assert frames.shape == (5, 64, 64, 3) and fps == 8
    assert sorted(p.name for p in result.video_path.parent.iterdir()) == sorted(
        [result.video_path.name, result.sidecar_path.name])  # no temp file left beside it


def test_any_text_survives_the_round_trip(tmp_path: Path) -> None:
    video = write_mp4(tmp_path / "clip.mp4", np.full((3, 32, 32, 3), 90, np.uint8), 8)
    before = video.read_bytes()
    data = {"app": "wan-studio test", "request": {"prompt": 'say "hi"; a=b # c \\ d\nnext line — 한국어 ✓'},
            "long": "w" * 300_000}  # longer than one command-line argument may be
    embed_settings(video, data)
    assert read_embedded_settings(video) == data
    frames, _ = read_mp4(video)
    assert frames.shape == (3, 32, 32, 3) and video.read_bytes() != before


def test_a_video_without_settings_reads_as_none(tmp_path: Path) -> None:
    video = write_mp4(tmp_path / "plain.mp4", np.zeros((2, 16, 16, 3), np.uint8), 8)
    assert read_embedded_settings(video) is None
