"""The planner's own ladder, walked down by injected out-of-memory errors, for every model at its
default size: a GPU that has less room than its free-memory reading said (another program took
some, the allocator fragments) must still get the job run on a lighter plan."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from wan_studio.catalog.specs import CATALOG, get_spec
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.plan import Limits, Plan, Workload
from wan_studio.memory.planner import plan_ladder, shortfall
from wan_studio.memory.recovery import OutOfMemoryEverywhere, run_with_recovery

FULL_SIZE = [k for k, s in CATALOG.items() if not s.is_demo]


def _hardware(gib: float) -> Hardware:
    """One card of ``gib`` GiB on a PC with 128 GiB of RAM."""
    return Hardware((gpu(0, gib, "NVIDIA RTX 6000 Ada", (8, 9)),), 128 * GIB, 128 * GIB)


def _default_work(key: str) -> Workload:
    spec = get_spec(key)
    w, h = spec.default_size
    return Workload(w, h, spec.frames if spec.frames % 4 == 1 else spec.frames + 1, spec.steps)


def _oom_above(room_gib: float, tried: list[str]) -> Any:
    """A job that runs out of memory whenever its plan predicts more than ``room_gib``."""
    def job(plan: Plan, before: tuple[Any, ...]) -> str:
        tried.append(plan.label)
        if plan.peak_vram_gib > room_gib:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {plan.peak_vram_gib:.2f} GiB")
        return plan.label
    return job


@pytest.mark.parametrize("key", FULL_SIZE)
def test_every_model_has_two_lighter_plans_and_an_oom_walks_down_to_the_one_that_runs(key: str) -> None:
    spec, work, hw = get_spec(key), _default_work(key), _hardware(48)
    ladder = plan_ladder(spec, work, hw)
    assert len(ladder) >= 3, [p.label for p in ladder]
    peaks = [p.peak_vram_gib for p in ladder]
    assert all(b < a * 0.85 + 1e-9 for a, b in zip(peaks, peaks[1:])), peaks  # each clearly lighter
    assert all(shortfall(p, hw, Limits()) is None for p in ladder)
    assert all(p.why.startswith("lighter fallback after running out of memory") for p in ladder[1:])
    # The card turns out to hold only a bit more than the third plan needs: two OOMs, then it runs.
    tried: list[str] = []
    done = run_with_recovery(ladder, _oom_above(peaks[2] + 0.01, tried))
    assert tried == [p.label for p in ladder[:3]]
    assert done.value == ladder[2].label and done.plan == ladder[2] and done.retries == 2
    assert [a.error is not None for a in done.attempts] == [True, True, False]
    assert f"{peaks[0]:.2f} GiB" in (done.attempts[0].error or "")


@pytest.mark.parametrize("key", FULL_SIZE)
def test_on_a_24gb_card_every_model_keeps_a_lighter_plan_for_an_oom(key: str) -> None:
    ladder = plan_ladder(get_spec(key), _default_work(key), _hardware(24))
    assert len(ladder) >= 2, [p.label for p in ladder]
    tried: list[str] = []
    done = run_with_recovery(ladder, _oom_above(ladder[-1].peak_vram_gib, tried))
    assert done.plan == ladder[-1] and tried == [p.label for p in ladder]


def test_when_even_the_lightest_plan_runs_out_the_user_is_told_every_plan_tried() -> None:
    ladder = plan_ladder(get_spec("ti2v-5b"), _default_work("ti2v-5b"), _hardware(48))
    tried: list[str] = []
    with pytest.raises(OutOfMemoryEverywhere, match="ran out of GPU memory with every plan") as e:
        run_with_recovery(ladder, _oom_above(0.0, tried))
    assert tried == [p.label for p in ladder] and all(p.label in str(e.value) for p in ladder)
