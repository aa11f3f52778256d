"""Every model samples on the official Wan2.2 grid: a real tiny job at the model's default steps and
shift runs exactly the timesteps of the official formula, records them in its sidecar, and the
A14B models hand over to the low-noise expert on the official step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_studio.catalog.specs import get_spec
from wan_studio.catalog.tiny import build_a14b_pipeline, build_scheduler, build_ti2v_pipeline
from wan_studio.engine.generate import generate
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.sampler import official_scheduler


def official_formula(steps: int, shift: float) -> list[int]:
    """The official solver's timesteps, written out from ``fm_solvers_unipc.py``: sigmas from its
    float32 sigma_max 1 - 1/1000 down to 0 (last one dropped), shifted, ×1000, truncated."""
    sigma_max = float(np.float32(0.999))
    sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return [int(s * 1000) for s in sigmas]


def _sidecar(result) -> dict:
    return json.loads(result.sidecar_path.read_text())


def _request(model: str, **kw) -> GenerationRequest:
    # Resolved directly (not validated) so the tiny pipelines run below the app's minimum size.
    return GenerationRequest(prompt="a red fox running", model=model, width=64, height=64, num_frames=5,
                             seed=3, **kw).resolved()


def test_the_issue_example_differs_from_diffusers_default_grid() -> None:
    # S2V at 4 steps, shift 3: the official solver runs these; diffusers' own flow grid does not.
    assert official_formula(4, 3.0) == [999, 899, 749, 499]
    plain = build_scheduler(3.0)
    plain.set_timesteps(4)
    assert plain.timesteps.tolist() == [999, 900, 750, 500]


@pytest.fixture(scope="module")
def a14b_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, list[str]]]:
    """One default-steps job per A14B model: its sidecar and which expert ran each forward pass."""
    runs = {}
    for task in ("t2v", "i2v"):
        pipe = build_a14b_pipeline(task)
        pipe.set_progress_bar_config(disable=True)
        log: list[str] = []
        pipe.transformer.register_forward_pre_hook(lambda *_: log.append("high"))
        pipe.transformer_2.register_forward_pre_hook(lambda *_: log.append("low"))
        extra = {}
        if task == "i2v":
            from PIL import Image

            image = tmp_path_factory.mktemp("img") / "start.png"
            Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(image)
            extra["image"] = str(image)
        # guidance 1 runs one forward pass per step, so the log has one entry per step.
        request = _request(f"{task}-a14b", guidance=1.0, guidance_2=1.0, **extra)
        result = generate(pipe, request, tmp_path_factory.mktemp(task))
        runs[task] = (_sidecar(result), log)
    return runs


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_a14b_job_runs_the_official_timesteps(a14b_runs, task: str) -> None:
    spec = get_spec(f"{task}-a14b")
    side, _ = a14b_runs[task]
    assert side["sampler"]["timesteps"] == official_formula(spec.steps, spec.shift)
    assert len(side["sampler"]["timesteps"]) == spec.steps == 40
    assert side["sampler"]["shift"] == spec.shift and "UniPC" in side["sampler"]["scheduler"]


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_a14b_switches_expert_on_the_official_step(a14b_runs, task: str) -> None:
    spec = get_spec(f"{task}-a14b")
    _, log = a14b_runs[task]
    # The official code runs the high-noise expert while t >= boundary · 1000.
    high = sum(1 for t in official_formula(spec.steps, spec.shift) if t >= spec.boundary * 1000)
    assert log == ["high"] * high + ["low"] * (spec.steps - high)
    assert 0 < high < spec.steps


def test_ti2v_job_runs_the_official_timesteps(tmp_path: Path) -> None:
    spec = get_spec("ti2v-5b")
    pipe = build_ti2v_pipeline()
    pipe.set_progress_bar_config(disable=True)
    result = generate(pipe, _request("ti2v-5b", guidance=1.0), tmp_path)
    side = _sidecar(result)
    assert side["sampler"]["timesteps"] == official_formula(spec.steps, spec.shift)
    assert len(side["sampler"]["timesteps"]) == 50


def test_noise_comes_from_the_seeded_cpu_generator_without_a_gpu(tmp_path: Path) -> None:
    pipe = build_ti2v_pipeline()
    pipe.set_progress_bar_config(disable=True)
    first: list[torch.Tensor] = []
    pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: first.append(kw["hidden_states"].clone()) if not first else None, with_kwargs=True)
    result = generate(pipe, _request("demo", steps=2, guidance=1.0), tmp_path)
    expected = torch.randn(first[0].shape, generator=torch.Generator("cpu").manual_seed(3))
    assert torch.equal(first[0], expected)
    assert _sidecar(result)["noise"]["device"] == "cpu"
    assert _sidecar(result)["noise"]["matches_official_gpu"] is False


def test_a_pinned_sigma_list_runs_as_given() -> None:
    sigmas = [1.0, 0.9375, 0.8333, 0.625]  # a distilled model's four steps, already shifted
    scheduler = official_scheduler(build_scheduler(5.0), 5.0, sigmas=sigmas)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 937, 833, 625]
    with pytest.raises(ValueError, match="pinned"):
        scheduler.set_timesteps(8)
    with pytest.raises(ValueError, match="decreasing"):
        official_scheduler(build_scheduler(5.0), 5.0, sigmas=[0.5, 0.9])
