"""What the planner tells a person: why this plan, why nothing fits and what would, why a pinned
choice cannot run, and how it ranks plans that are equally fast. The sentences are the product here
(the Advanced tab and the API show them as they are)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_studio.catalog.specs import T2V_A14B, TI2V_5B
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.overrides import OverrideError, PlanOverrides
from wan_studio.memory.plan import Limits, NoPlanFits, Workload
from wan_studio.memory.planner import QUALITY_WEIGHT, _duration, candidates, choose, plan_ladder, score, shortfall

A14B_480 = Workload(832, 480, 81, 40)
A14B_720 = Workload(1280, 720, 81, 40)
TI2V_720 = Workload(1280, 704, 121, 50)


def box(n_gpus: int = 1, gib: float = 24, ram_gib: float = 64) -> Hardware:
    return Hardware(tuple(gpu(i, gib, "NVIDIA GeForce RTX 3090", (8, 6)) for i in range(n_gpus)),
                    int(ram_gib * GIB), int(ram_gib * GIB))


def refusal(*args: object) -> str:
    with pytest.raises(NoPlanFits) as e:
        choose(*args)  # type: ignore[arg-type]
    return str(e.value)


@pytest.mark.parametrize("seconds, words", [(0.2, "1 s"), (89, "89 s"), (90, "2 min"), (3000, "50 min"),
                                            (5399, "90 min"), (5400, "1.5 h"), (36184, "10.1 h")])
def test_durations_read_in_seconds_minutes_or_hours(seconds: float, words: str) -> None:
    assert _duration(seconds) == words


def test_between_equally_fast_plans_one_gpu_wins_over_two() -> None:
    one = next(p for p, _ in candidates(TI2V_5B, TI2V_720, box(2), Limits()) if len(p.devices) == 1)
    two = replace(one, placements=tuple(replace(p, device="cuda:1") if p.component == "text_encoder" else p
                                         for p in one.placements))
    assert len(two.devices) == 2
    assert score(one) == one.relative_speed * QUALITY_WEIGHT[one.storage]  # one GPU: no nudge
    assert score(two) < score(one) and score(two) == pytest.approx(score(one) * 0.99)


def test_the_chosen_plan_says_it_is_the_fastest_when_nothing_faster_exists() -> None:
    plan = choose(TI2V_5B, TI2V_720, box(1, 141, 256))
    assert plan.why == (f"all on GPU: the fastest way to run it here; predicted peak {plan.peak_vram_gib:.1f} GiB, "
                        "100% of full speed, full quality (bf16 weights).")


def test_the_fastest_plan_says_so_even_where_slower_plans_do_not_fit() -> None:
    hw = box(1, 141, 16)  # a big card in a PC with little RAM: the offloading plans need more of it
    assert any(shortfall(p, hw, Limits()) for p, _ in candidates(TI2V_5B, TI2V_720, hw, Limits()))
    plan = choose(TI2V_5B, TI2V_720, hw)
    assert plan.label == "all on GPU"
    assert plan.why.startswith("all on GPU: the fastest way to run it here; ")


@pytest.mark.parametrize("work, hw", [(TI2V_720, box(1, 24)), (TI2V_720, box(1, 12)), (A14B_720, box(1, 24, 128))])
def test_the_chosen_plan_names_the_fastest_option_that_did_not_fit(work: Workload, hw: Hardware) -> None:
    spec = TI2V_5B if work is TI2V_720 else T2V_A14B
    plan = choose(spec, work, hw)
    every = [p for p, _ in candidates(spec, work, hw, Limits())]
    faster = [p for p in every if score(p) > score(plan) and shortfall(p, hw, Limits())]
    top = max(faster, key=score)
    assert plan.why.startswith(f"{plan.label}: the faster '{top.label}' {shortfall(top, hw, Limits())}; "
                               f"predicted peak {plan.peak_vram_gib:.1f} GiB, {plan.relative_speed:.0%} of full speed")


def test_choose_plans_under_the_limits_given() -> None:
    assert choose(T2V_A14B, A14B_480, box(1, 24, 64)).storage == "fp8"
    with pytest.raises(NoPlanFits, match="Try to allow fp8 storage"):
        choose(T2V_A14B, A14B_480, box(1, 24, 64), Limits(allow_fp8=False))


@pytest.mark.parametrize("args, closest, advice", [
    ((T2V_A14B, A14B_720, box(1, 24, 16), Limits(allow_fp8=False)), "text encoder on CPU, transformer on GPU 0",
     "Try to allow fp8 storage, or allow 8-bit weights, or lower the resolution or the number of frames, or free "
     "GPU memory or add RAM."),
    ((T2V_A14B, A14B_720, box(1, 24, 16), Limits(allow_8bit=True)),
     "text encoder on CPU, transformer on GPU 0, int8 transformer",
     "Try to lower the resolution or the number of frames, or free GPU memory or add RAM."),
    ((T2V_A14B, A14B_480, box(0, 0, 8), Limits()), "cpu, fp8 transformer",
     "Try to allow 8-bit weights, or lower the resolution or the number of frames, or free GPU memory or add RAM."),
    ((T2V_A14B, Workload(1280, 720, 161, 40), box(1, 8, 32), Limits()), "sequential offload",
     "Try to allow 8-bit weights, or lower the resolution or the number of frames, or free GPU memory or add RAM."),
    ((TI2V_5B, Workload(1920, 1088, 121, 50), box(1, 6, 32), Limits(allow_8bit=True)), "sequential offload",
     "Try to make it 1920×1088×49 or 1440×800×121, which fit, or free GPU memory or add RAM."),
    # three quarters of each side does not fit a 5 GB card either: half of each side is offered
    ((TI2V_5B, Workload(1920, 1088, 121, 50), box(1, 5, 32), Limits(allow_8bit=True)), "sequential offload",
     "Try to make it 1920×1088×49 or 960×544×121, which fit, or free GPU memory or add RAM."),
    ((T2V_A14B, Workload(1920, 1088, 121, 50), box(1, 6, 64), Limits(allow_8bit=True)), "sequential offload",
     "Try to make it 1920×1088×1, which fits, or free GPU memory or add RAM."),
])
def test_nothing_fits_names_the_closest_plan_and_what_to_change(args: tuple, closest: str, advice: str) -> None:
    spec, work, hw, limits = args
    words = refusal(*args)
    assert words.startswith(f"{spec.title} cannot run at {work.describe()} on {hw.describe()}: the closest plan "
                            f"('{closest}') needs "), words
    assert words.endswith(advice), words


def test_the_closest_plan_is_the_one_least_over_its_budget_in_vram_or_ram() -> None:
    words = refusal(T2V_A14B, A14B_480, box(1, 24, 64), Limits(allow_fp8=False))
    assert "the closest plan ('block offload with prefetch') needs 69 GiB of RAM where 54 GiB are usable" in words


def test_pinned_choices_that_cannot_run_say_why_and_what_automatic_would_pick() -> None:
    hw = box(1, 24, 64)

    def pinned(overrides: dict[str, str], limits: Limits = Limits()) -> str:
        with pytest.raises(OverrideError) as e:
            plan_ladder(T2V_A14B, A14B_480, hw, limits, PlanOverrides.from_dict(overrides))
        return str(e.value)

    assert pinned({"storage": "fp8"}, Limits(allow_fp8=False)) == \
        "fp8 storage is turned off on this server (--no-fp8); pick bf16 or automatic"
    assert pinned({"gpu": "cuda:1"}) == (f"{T2V_A14B.title} has no way to run with gpu cuda:1 on {hw.describe()}; "
                                         "set that override back to automatic")
    head = (f"{T2V_A14B.title} at 832×480×81 with storage bf16, offload resident does not fit: 'text encoder on "
            "CPU, transformer on GPU 0' needs 57.7 GiB on cuda:0 where 21.5 GiB are usable.")
    assert pinned({"offload": "resident", "storage": "bf16"}) == \
        head + " The automatic choice would be 'model offload, fp8 transformer'."
    # Under --no-fp8 nothing fits automatically either: the sentence ends after the shortfall.
    assert pinned({"offload": "resident", "storage": "bf16"}, Limits(allow_fp8=False)) == head
    big = box(1, 24, 128)
    with pytest.raises(OverrideError, match=r"The automatic choice would be 'block offload with prefetch, text encoder and VAE "
                                            r"model-offloaded'\.$"):
        plan_ladder(T2V_A14B, A14B_480, big, Limits(allow_fp8=False),
                    PlanOverrides.from_dict({"offload": "resident", "storage": "bf16"}))
