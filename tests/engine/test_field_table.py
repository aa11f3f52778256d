"""The request field table: complete, read by validation, and what speech-to-video and the
diffusers pipeline call do with each field."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wan_studio.engine.request import FIELDS, SURFACES, GenerationRequest, RequestError, validate
from tests.fields import files, samples

# S2V fields that choose the job rather than feed the pipeline call: the model (which pipeline),
# the preset (recorded in the sidecar) and plan overrides (the planner's placement).
S2V_JOB_LEVEL = {"model", "preset", "overrides"}
# What each S2V field is set to in the S2V tests (the demo S2V model is 64×64, sides 64–256).
S2V_VALUES = {"width": 128, "height": 128, "fps": 12, "steps": 3, "guidance": 2.0, "shift": 6.0, "seed": 99,
              "prompt": "she laughs", "negative_prompt": "blurry", "overrides": {"offload": "cpu"},
              "preset": "mine", "model": "demo-s2v"}


class _Stop(Exception):
    """Raised by a recording pipeline once it has seen its call."""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, str]:
    return files(tmp_path_factory.mktemp("fields"))


def test_every_field_has_a_row_and_a_sample(made) -> None:
    assert set(samples(made)) == set(FIELDS)
    for name, f in FIELDS.items():
        assert f.name == name and f.help and f.kind in (str, int, float, list, dict)
        assert set(f.surfaces) <= set(SURFACES), name
        assert (f.low is None) == (f.high is None), name


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.low is not None])
def test_each_range_of_the_table_is_enforced(name: str) -> None:
    f = FIELDS[name]
    extra = {"step_cache": "mag"} if name == "cache_threshold" else {}
    with pytest.raises(RequestError, match=f"{name} must be between"):
        validate(GenerationRequest(prompt="x", **{**extra, name: type(f.high)(f.high) + 1}))


def test_each_choice_list_of_the_table_is_enforced() -> None:
    for name, f in FIELDS.items():
        if f.choices is not None:
            with pytest.raises(RequestError, match=f"choose one of {', '.join(f.choices)}"):
                validate(GenerationRequest(prompt="x", **{name: "nonsense"}))


def _s2v_base(made: dict[str, str]) -> GenerationRequest:
    return GenerationRequest(prompt="a woman speaking", model="demo-s2v", image=made["portrait"], audio=made["audio"])


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.s2v])
def test_s2v_refuses_in_words_each_field_it_does_not_use(made, name: str) -> None:
    value = samples(made)[name][name]
    with pytest.raises(RequestError, match=re.escape(FIELDS[name].s2v)) as e:
        validate(dataclasses.replace(_s2v_base(made), **{name: value}))
    assert str(e.value).startswith("Demo talking head")


def test_s2v_accepts_the_official_framing_and_its_own_frame_count(made) -> None:
    validate(dataclasses.replace(_s2v_base(made), framing="official", num_frames=80))


def _s2v_call(made: dict[str, str], tmp_path: Path, **change: Any) -> dict[str, Any]:
    """What ``generate_s2v`` hands the S2V pipeline for the base request with ``change``."""
    from wan_studio.engine.s2v.runner import generate_s2v

    seen: dict[str, Any] = {}

    def pipe(image: Any, samples_: np.ndarray, **kwargs: Any) -> None:
        seen.update(kwargs, image=np.asarray(image).tobytes(), samples=samples_.tobytes(),
                    pose_video=None if kwargs["pose_video"] is None else kwargs["pose_video"].tobytes())
        seen.pop("callback")
        raise _Stop

    pipe.vae = None  # type: ignore[attr-defined]  # the runner watches the VAE's decode; none runs here
    r = validate(dataclasses.replace(_s2v_base(made), **{"seed": 1, **change}))
    with pytest.raises(_Stop):
        generate_s2v(pipe, r, tmp_path)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if not f.s2v])
def test_s2v_uses_every_field_it_accepts(made, tmp_path: Path, name: str) -> None:
    if name in S2V_JOB_LEVEL:
        validate(dataclasses.replace(_s2v_base(made), **{name: S2V_VALUES[name]}))  # accepted
        return
    base = _s2v_call(made, tmp_path)
    other = {"image": made["image"], "audio": str(Path(made["audio"]).with_name("speech-2.wav")),
             "pose_video": made["pose_video"]}
    if name == "audio":
        from wan_studio.engine.s2v.audio_io import write_wav

        t = np.arange(24000) / 16000
        write_wav(Path(other["audio"]), (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)))
                  .astype(np.float32))
    if name == "image":
        other["image"] = str(Path(made["portrait"]).with_name("portrait-2.png"))
        from PIL import Image

        Image.new("RGB", (192, 256), (30, 60, 200)).save(other["image"])
    value = other.get(name, S2V_VALUES.get(name, samples(made)[name][name]))
    assert _s2v_call(made, tmp_path, **{name: value}) != base, f"S2V ignores {name}"


# Fields the diffusers pipeline call does not take, and where each one acts instead.
NOT_IN_THE_CALL = {
    "model": "chooses the pipeline", "preset": "recorded in the sidecar", "overrides": "the memory plan",
    "fps": "the mp4 written after the call (tests/engine/test_generate.py)",
    "audio": "the S2V pipeline (above)", "pose_video": "the S2V pipeline (above)",
    "last_image": "I2V-A14B's call (tests/engine/test_a14b_pipelines.py)", "guidance_2": "A14B's call (below)",
    "total_frames": "engine/long_video.py", "window_overlap": "engine/long_video.py",
    "window_prompts": "engine/long_video.py", "loras": "engine/lora.py", "step_cache": "engine/caches.py",
    "cache_threshold": "engine/caches.py", "fast": "engine/distill.py", "motion_steps": "engine/distill.py",
}


def test_every_other_field_reaches_the_diffusers_pipeline_call(demo_pipe, made, monkeypatch) -> None:
    """Each field not listed above changes the pipeline's call (its arguments, noise or scheduler)."""
    from diffusers import WanImageToVideoPipeline

    from wan_studio.engine import generate

    calls: list[dict[str, Any]] = []

    def record(self: Any, **kwargs: Any) -> None:
        image = kwargs.get("image")
        calls.append({**{k: v for k, v in kwargs.items() if k not in ("generator", "callback_on_step_end", "image")},
                      "noise": kwargs["generator"].initial_seed(), "shift": self.scheduler.config.flow_shift,
                      "image": None if image is None else (image.size, np.asarray(image).tobytes())})
        raise _Stop

    monkeypatch.setattr(type(demo_pipe), "__call__", record)
    monkeypatch.setattr(WanImageToVideoPipeline, "__call__", record)
    base = dict(prompt="a lighthouse", model="demo", width=192, height=128, num_frames=9, steps=2, seed=7)

    def call(**change: Any) -> dict[str, Any]:
        with pytest.raises(_Stop):
            generate.render(demo_pipe, validate(GenerationRequest(**{**base, **change})))
        return calls[-1]

    first = call()
    assert first["prompt"] == "a lighthouse" and first["num_inference_steps"] == 2
    assert set(NOT_IN_THE_CALL) < set(FIELDS)
    for name in FIELDS:
        if name not in NOT_IN_THE_CALL:
            assert call(**samples(made)[name]) != first, f"{name} does not reach the pipeline call"
    with_image = call(image=made["image"], width=128, height=128)  # a 3:2 image in a square
    assert call(image=made["image"], width=128, height=128, framing="crop") != with_image, \
        "framing does not reach the pipeline call"


def test_guidance_2_reaches_the_a14b_call() -> None:
    from wan_studio.catalog.specs import get_spec
    from wan_studio.engine.generate import _pipeline_kwargs

    r = validate(GenerationRequest(prompt="x", model="t2v-a14b", guidance_2=2.5))
    assert _pipeline_kwargs(get_spec("t2v-a14b"), r)["guidance_scale_2"] == 2.5
