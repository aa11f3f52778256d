"""T2V-A14B and I2V-A14B through the engine on tiny two-expert pipelines: official defaults,
both experts take part (high noise first), I2V honours an optional last frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_studio.catalog.tiny import build_a14b_pipeline
from wan_studio.engine.generate import generate
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.video_io import read_mp4


def _expert_log(pipe) -> list[str]:
    log: list[str] = []
    pipe.transformer.register_forward_pre_hook(lambda *_: log.append("high"))
    pipe.transformer_2.register_forward_pre_hook(lambda *_: log.append("low"))
    return log


def _request(model: str, **kw) -> GenerationRequest:
    # Resolved directly so the tiny model runs at 64×64 × 5 frames (below the app's minimum).
    return GenerationRequest(prompt="a red fox running", model=model, width=64, height=64, num_frames=5,
                             steps=4, seed=3, **kw).resolved()


@pytest.mark.parametrize("model,defaults", [
    ("t2v-a14b", (4.0, 3.0, 12.0)),
    ("i2v-a14b", (3.5, 3.5, 5.0)),
])
def test_official_guidance_pairs_and_shift_resolve(model: str, defaults: tuple[float, float, float]) -> None:
    r = _request(model)
    assert (r.guidance, r.guidance_2, r.shift) == defaults


def test_t2v_a14b_runs_high_noise_expert_then_low_noise(tmp_path: Path) -> None:
    pipe = build_a14b_pipeline("t2v")
    log = _expert_log(pipe)
    result = generate(pipe, _request("t2v-a14b"), tmp_path)
    # Each step runs one expert twice (with and without the prompt, guidance > 1).
    assert log[0] == "high" and log[-1] == "low"
    assert log == sorted(log, key=lambda e: e == "low"), "experts must not interleave"
    frames, fps = read_mp4(result.video_path)
    assert frames.shape == (5, 64, 64, 3) and fps == 16


def _solid(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(path)
    return path


def test_i2v_a14b_uses_the_last_frame_when_given(tmp_path: Path) -> None:
    pipe = build_a14b_pipeline("i2v")
    log = _expert_log(pipe)
    first = _solid(tmp_path / "first.png", (200, 40, 40))
    last = _solid(tmp_path / "last.png", (40, 40, 200))
    plain = generate(pipe, _request("i2v-a14b", image=str(first)), tmp_path / "a")
    ended = generate(pipe, _request("i2v-a14b", image=str(first), last_image=str(last)), tmp_path / "b")
    assert {"high", "low"} <= set(log)
    a, _ = read_mp4(plain.video_path)
    b, _ = read_mp4(ended.video_path)
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert not np.array_equal(a, b)
    assert json.loads(ended.sidecar_path.read_text())["request"]["last_image"] == str(last)
