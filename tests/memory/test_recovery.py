"""Out-of-memory recovery: an injected torch.OutOfMemoryError moves the job to a lighter plan."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from tests.memory.helpers import cpu_plan
from wan_studio.catalog.specs import DEMO, ModelSpec
from wan_studio.engine.request import GenerationRequest
from wan_studio.memory.loaders import TinyLoader
from wan_studio.memory.manager import ModelManager
from wan_studio.memory.recovery import OutOfMemoryEverywhere, run_with_recovery

PLANS = [cpu_plan(DEMO, label="heavy"), cpu_plan(DEMO, offload="group_offload", label="light")]


def test_oom_moves_to_the_next_plan_and_records_it() -> None:
    seen: list[str] = []

    def job(plan: Any, before: tuple[Any, ...]) -> str:
        seen.append(plan.label)
        if plan.label == "heavy":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran with {len(before)} failure(s) before"

    done = run_with_recovery(PLANS, job)
    assert seen == ["heavy", "light"]
    assert done.value == "ran with 1 failure(s) before" and done.plan.label == "light" and done.retries == 1
    assert "out of memory" in done.attempts[0].error and done.attempts[1].error is None


def test_other_errors_are_not_retried() -> None:
    calls: list[str] = []

    def job(plan: Any, before: tuple[Any, ...]) -> None:
        calls.append(plan.label)
        raise ValueError("bad prompt")

    with pytest.raises(ValueError, match="bad prompt"):
        run_with_recovery(PLANS, job)
    assert calls == ["heavy"]


def test_oom_on_every_plan_says_what_was_tried() -> None:
    def job(plan: Any, before: tuple[Any, ...]) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemoryEverywhere, match="heavy; light"):
        run_with_recovery(PLANS, job)


class OomOnceLoader(TinyLoader):
    """The first transformer forward ever runs out of memory, as a too-big plan would on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = False

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        module = super().load(spec, name, storage)
        if name == "transformer":
            module.register_forward_pre_hook(self._maybe_oom)
        return module

    def _maybe_oom(self, *_: Any) -> None:
        if not self.fired:
            self.fired = True
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")


def test_job_recovers_from_oom_mid_denoising_and_sidecar_says_so(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from wan_studio.memory.hardware import Hardware
    from wan_studio.services import Studio

    loader = OomOnceLoader()
    studio = Studio.create(settings, manager=ModelManager(loader), hardware=Hardware())
    monkeypatch.setattr(studio, "plans", lambda request: list(PLANS))
    # The worker runtime plans the job again on its own hardware view: the same ladder there.
    monkeypatch.setattr(studio.queue.executor._runtime, "plans", lambda spec, request: list(PLANS))
    notes: list[str] = []
    result = studio.run(GenerationRequest(prompt="a fox", model="demo", width=64, height=64, num_frames=5,
                                          steps=2, seed=3), on_progress=lambda p: notes.append(p.note or ""))
    # while the lighter plan loads, the user is told why the job started over
    assert "out of GPU memory with heavy; trying a lighter plan" in notes
    sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
    assert loader.fired and result.video_path.stat().st_size > 0
    assert sidecar["plan"]["label"] == "light" and sidecar["plan_retries"] == 1
    assert "out of memory" in sidecar["plan_attempts"][0]["error"]
    assert sidecar["plan_attempts"][1] == {"plan": "light", "error": None}
