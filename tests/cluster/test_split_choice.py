"""Which split a job gets: an unguided (guidance 1) job never takes the CFG split; a two-expert model
takes the expert split instead; a job with LoRAs is not split. The split itself runs on a real Ray
cluster in test_ray_backend.py."""

from __future__ import annotations

import pytest

from wan_studio.cluster.ray_backend import RayExecutor, _Worker


def executor(split: str) -> tuple[RayExecutor, _Worker]:
    ex = RayExecutor.__new__(RayExecutor)  # the planning needs no cluster: only the workers' states
    ex.split = split  # type: ignore[assignment]
    a, b = _Worker("a", "n1", "handle-a", state="busy"), _Worker("b", "n1", "handle-b", state="idle")
    ex._workers = {"a": a, "b": b}
    return ex, a


@pytest.mark.parametrize("split", ["cfg", "auto", "experts"])
def test_a_guidance_1_two_expert_job_takes_the_expert_split(split: str) -> None:
    ex, a = executor(split)
    plan = ex._plan_split(a, "job", {"model": "t2v-a14b", "guidance": 1.0, "guidance_2": 1.0})
    assert plan is not None and plan["mode"] == "experts"


@pytest.mark.parametrize("request_fields", [
    {"guidance": 1.0},                       # CFG-free TI2V-5B: nothing to split
    {"guidance": 1.0, "guidance_2": 3.0},    # diffusers runs no CFG when the first guidance is 1
])
def test_an_unguided_one_expert_job_takes_no_cfg_split(request_fields: dict) -> None:
    ex, a = executor("cfg")
    assert ex._plan_split(a, "job", {"model": "ti2v-5b", **request_fields}) is None


def test_a_guided_job_and_a_motion_phase_still_take_the_cfg_split() -> None:
    ex, a = executor("cfg")
    assert ex._plan_split(a, "job", {"model": "ti2v-5b", "guidance": 5.0})["mode"] == "cfg"
    ex, a = executor("cfg")
    assert ex._plan_split(a, "job", {"model": "ti2v-5b", "guidance": 1.0, "motion_steps": 1})["mode"] == "cfg"


@pytest.mark.parametrize("extra", [{"fast": "lightning-t2v-a14b"}, {"loras": [{"file": "style.safetensors"}]}])
def test_a_job_with_loras_runs_whole_on_one_worker(extra: dict) -> None:
    # The peer would compute with its plain weights, without the job's LoRAs.
    ex, a = executor("auto")
    assert ex._plan_split(a, "job", {"model": "t2v-a14b", "guidance": 1.0, **extra}) is None
