"""Speech-to-video conditions and samples as the official code does: prompts cleaned like the
official tokenizer, the official timesteps at the model's default steps and shift, noise recorded."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import ftfy
import numpy as np
import pytest
import torch

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.s2v.runner import generate_s2v

# Mojibake, an entity escaped twice, tabs, newlines and runs of spaces.
MESSY = "  A fox   &amp;amp; a\tcat,\n\n cafÃ©  lights. "


def official_clean(text: str) -> str:
    """The official tokenizer's ``clean='whitespace'``, written out: ftfy, unescape twice, strip,
    then runs of whitespace made one space."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def test_messy_prompt_gives_the_official_token_count(s2v_pipe) -> None:
    cleaned = official_clean(MESSY)
    assert cleaned == "A fox & a cat, café lights."
    emb = s2v_pipe.encode_text(MESSY, torch.device("cpu"))
    # The tiny tokenizer spends one token per UTF-8 byte, plus the closing </s>.
    assert emb.shape[1] == len(cleaned.encode()) + 1
    assert emb.shape[1] < len(MESSY.encode()) + 1
    assert torch.equal(emb, s2v_pipe.encode_text(cleaned, torch.device("cpu")))


@pytest.mark.timeout(1800)  # 40 steps on a CPU
def test_default_job_runs_the_official_timesteps_and_records_its_noise(s2v_pipe, portrait_file: Path,
                                                                       make_audio, tmp_path: Path) -> None:
    spec = get_spec("s2v-14b")
    request = GenerationRequest(prompt="a person talking", model="s2v-14b", image=str(portrait_file),
                                audio=str(make_audio(0.5)), width=64, height=64, guidance=1.0, seed=5).resolved()
    result = generate_s2v(s2v_pipe, request, tmp_path, chunk_frames=16)  # one chunk
    side = json.loads(result.sidecar_path.read_text())
    sigmas = np.linspace(float(np.float32(0.999)), 0.0, spec.steps + 1)[:-1]
    sigmas = spec.shift * sigmas / (1 + (spec.shift - 1) * sigmas)
    assert side["sampler"]["timesteps"] == [int(s * 1000) for s in sigmas]
    assert side["sampler"]["timesteps"][:4] == [999, 991, 982, 973] and spec.steps == 40
    assert side["noise"]["device"] == "cpu" and side["noise"]["seed"] == 5
    assert side["request"]["negative_prompt"] == spec.negative_prompt  # blank -> the official default


def test_every_step_of_a_talking_clip_gets_a_live_preview_of_the_samplers_x0(s2v_pipe, portrait_file: Path,
                                                                              make_audio, tmp_path: Path) -> None:
    from wan_studio.engine.preview import LivePreview

    request = GenerationRequest(prompt="a person talking", model="s2v-14b", image=str(portrait_file),
                                audio=str(make_audio(0.5)), width=64, height=64, guidance=1.0, steps=3,
                                seed=5).resolved()
    preview = LivePreview(tmp_path / "work")
    generate_s2v(s2v_pipe, request, tmp_path, chunk_frames=16, preview=preview)
    assert (preview.written, preview.step, preview.source) == (3, 3, "x0")  # the UniPC prediction, 16 channels
    assert preview.path is not None and preview.path.is_file()
