"""Distilled ("fast") jobs on real tiny pipelines: one transformer pass per step at guidance 1 on the
recipe's timesteps, the distill LoRAs in their experts, the motion phase, and the words a user reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.lora_files import lora_tensors, write_lora
from wan_studio.catalog.specs import get_spec
from wan_studio.catalog.tiny import build_a14b_pipeline
from wan_studio.engine.distill import get_recipe
from wan_studio.engine.job import execute
from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.memory.estimate import timing
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.plan import Workload
from wan_studio.memory.planner import choose

RECIPE = get_recipe("lightning-t2v-a14b")


@pytest.fixture(scope="module")
def pipe():
    p = build_a14b_pipeline("t2v")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture
def loras(tmp_path: Path, pipe) -> Path:
    """The Lightning pair where the Hub download puts it, in two of the layouts it is published in."""
    folder = tmp_path / "loras"
    high, low = RECIPE.loras
    write_lora(folder / high.file, lora_tensors(pipe.transformer, "original", seed=1))
    write_lora(folder / low.file, lora_tensors(pipe.transformer_2, "comfyui", seed=2))
    return folder


def calls(pipe) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every expert forward: which expert, at which timestep, with what LoRA scale."""
    log: list[dict[str, Any]] = []

    def hook(name: str, module):
        def record(_m, args, kwargs):
            scales = [v for m in module.modules() for v in (getattr(m, "scaling", None) or {}).values()]
            log.append({"expert": name, "t": round(float(kwargs["timestep"].flatten()[0]), 1),
                        "lora": max(scales) if scales else None})
        return module.register_forward_pre_hook(record, with_kwargs=True)

    return log, [hook("high", pipe.transformer), hook("low", pipe.transformer_2)]


def run(pipe, tmp_path: Path, loras: Path, **fields) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # Resolved directly: the tiny model runs at 64×64×5, below the app's minimum size.
    request = GenerationRequest(prompt="a red fox running", model="t2v-a14b", width=64, height=64, num_frames=5,
                                seed=3, **fields).resolved()
    log, hooks = calls(pipe)
    try:
        result = execute(pipe, request, tmp_path / "out", loras_dir=loras, work_dir=tmp_path / "work")
    finally:
        for h in hooks:
            h.remove()
    return log, json.loads(result.sidecar_path.read_text())


def test_a_guidance_1_fast_job_runs_one_pass_per_step_on_the_distilled_timesteps(pipe, tmp_path, loras):
    log, side = run(pipe, tmp_path, loras, fast="lightning-t2v-a14b")
    assert [c["expert"] for c in log] == ["high", "high", "low", "low"]  # 4 steps, one forward each
    # Lightning's grid 1000/750/500/250 after shift 5 (σ' = 5σ / (1 + 4σ)); boundary 875 between 2 and 3.
    assert [c["t"] for c in log] == [1000.0, 937.5, 833.3, 625.0]
    assert all(c["lora"] for c in log), "the distill LoRAs run on every step"
    assert side["request"]["guidance"] == 1.0 and side["request"]["guidance_2"] == 1.0
    assert [x["experts"] for x in side["loras"]] == [["high"], ["low"]]
    assert [x["layout"] for x in side["loras"]] == ["original", "comfyui"]
    assert side["fast"]["recipe"] == "lightning-t2v-a14b"


def test_the_same_job_at_official_guidance_runs_two_passes_per_step(pipe, tmp_path, loras):
    log, _ = run(pipe, tmp_path, loras, steps=4)
    assert len(log) == 8 and all(c["lora"] is None for c in log)


def test_the_motion_phase_guides_its_first_steps_on_the_base_weights(pipe, tmp_path, loras):
    log, side = run(pipe, tmp_path, loras, fast="lightning-t2v-a14b", motion_steps=1)
    # Step 1: the high-noise expert twice (with and without the prompt), LoRAs scaled to 0.
    assert [(c["expert"], c["lora"]) for c in log[:2]] == [("high", 0.0), ("high", 0.0)]
    # Steps 2–4: one pass each, the distill LoRAs back at strength, on the same timestep grid.
    assert [c["expert"] for c in log[2:]] == ["high", "low", "low"] and all(c["lora"] for c in log[2:])
    assert [c["t"] for c in log[1:]] == [1000.0, 937.5, 833.3, 625.0]
    assert side["fast"]["motion_steps"] == 1


def test_missing_distill_files_are_named_with_the_download_command(pipe, tmp_path):
    request = GenerationRequest(prompt="a fox", model="t2v-a14b", width=64, height=64, num_frames=5,
                                fast="lightning-t2v-a14b").resolved()
    with pytest.raises(RequestError) as e:
        execute(pipe, request, tmp_path / "out", loras_dir=tmp_path / "empty", work_dir=tmp_path / "work")
    assert "not downloaded" in str(e.value)
    assert (f"hf download lightx2v/Wan2.2-Lightning {RECIPE.loras[0].file} {RECIPE.loras[1].file} "
            f"--local-dir {tmp_path / 'empty'}") in str(e.value)


def test_a_fast_request_takes_the_recipe_defaults_and_a_bf16_decode():
    r = validate(GenerationRequest(prompt="a fox", model="t2v-a14b", fast="lightning-t2v-a14b"))
    assert (r.steps, r.guidance, r.guidance_2, r.shift, r.motion_steps) == (4, 1.0, 1.0, 5.0, 0)
    assert r.overrides == {"decode": "bf16"}
    pinned = validate(GenerationRequest(prompt="a fox", model="t2v-a14b", fast="lightning-t2v-a14b",
                                        overrides={"decode": "fp32"}, steps=6))
    assert pinned.overrides == {"decode": "fp32"} and pinned.steps == 6


@pytest.mark.parametrize("fields, words", [
    (dict(fast="lightning-i2v-a14b"), "made for Wan2.2 I2V-A14B"),
    (dict(fast="turbo"), "unknown fast recipe"),
    (dict(fast="lightning-t2v-a14b", step_cache="mag"), "needs every step"),
    (dict(fast="lightning-t2v-a14b", motion_steps=3), "motion_steps must be between 0 and 2"),
    (dict(motion_steps=1), "belongs to a fast"),
])
def test_bad_fast_settings_are_refused_in_words(fields, words):
    fields = {"model": "t2v-a14b", **fields}
    with pytest.raises(RequestError, match=words):
        validate(GenerationRequest(prompt="a fox", **fields))


def test_the_time_model_counts_one_pass_at_guidance_1_and_the_guided_motion_steps():
    spec = get_spec("t2v-a14b")
    hw = Hardware((gpu(0, 24.0),), 64 * GIB, 64 * GIB)
    fast = Workload.from_request(validate(GenerationRequest(prompt="a", model=spec.key, fast="lightning-t2v-a14b")))
    motion = Workload.from_request(validate(GenerationRequest(prompt="a", model=spec.key, fast="lightning-t2v-a14b",
                                                              motion_steps=2)))
    official = Workload.from_request(validate(GenerationRequest(prompt="a", model=spec.key, steps=4)))
    assert (fast.passes_per_step, motion.passes_per_step, official.passes_per_step) == (1.0, 1.5, 2.0)
    plan = choose(spec, official, hw)
    step = {name: timing(spec, w, plan.placements, hw)[0] for name, w in
            (("fast", fast), ("motion", motion), ("official", official))}
    assert step["fast"] < step["motion"] < step["official"]
    assert step["official"] / step["fast"] == pytest.approx(2.0, rel=0.05)
