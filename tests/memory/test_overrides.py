"""Plan overrides: pinned knobs are honoured, and an override that cannot fit says so clearly."""

from __future__ import annotations

import pytest

from wan_studio.catalog.specs import I2V_A14B, TI2V_5B
from wan_studio.memory.overrides import OverrideError, PlanOverrides
from wan_studio.memory.plan import Limits, Workload
from wan_studio.memory.planner import plan_ladder
from tests.memory.test_planner import A14B_480, TI2V_720, box

HD_1080 = Workload(1920, 1088, 241, 50)  # 1080p 10 s from an image


def test_pinned_offload_and_storage_are_honoured_on_every_rung() -> None:
    pins = PlanOverrides(storage="fp8", offload="group_offload")
    ladder = plan_ladder(TI2V_5B, TI2V_720, box(), overrides=pins)
    assert ladder[0].storage == "fp8"
    for plan in ladder:
        assert plan.placement("transformer").offload == "group_offload"
        assert plan.placement("transformer").storage == "fp8"
    assert "pinned: storage fp8, offload group_offload" in ladder[0].why
    assert ladder[0].label != plan_ladder(TI2V_5B, TI2V_720, box())[0].label


def test_text_encoder_and_gpu_pins_on_two_cards() -> None:
    plan = plan_ladder(I2V_A14B, A14B_480, box(2, ram_gib=128),
                       overrides=PlanOverrides(text_encoder="cpu"))[0]
    assert plan.placement("text_encoder").device == "cpu"
    plan = plan_ladder(I2V_A14B, A14B_480, box(2, ram_gib=128),
                       overrides=PlanOverrides(text_encoder="second_gpu"))[0]
    assert plan.placement("text_encoder").device == "cuda:1"


def test_8bit_pin_works_without_the_flag_but_fp8_respects_no_fp8() -> None:
    plan = plan_ladder(TI2V_5B, TI2V_720, box(), overrides=PlanOverrides(storage="int8"))[0]
    assert plan.storage == "int8"
    with pytest.raises(OverrideError, match="--no-fp8"):
        plan_ladder(TI2V_5B, TI2V_720, box(), Limits(allow_fp8=False), PlanOverrides(storage="fp8"))


def test_an_override_that_cannot_fit_names_the_need_and_the_automatic_choice() -> None:
    with pytest.raises(OverrideError) as e:
        plan_ladder(TI2V_5B, HD_1080, box(), overrides=PlanOverrides(offload="resident", storage="bf16"))
    text = str(e.value)
    assert "offload resident" in text and "GiB on cuda:0" in text and "automatic choice would be" in text


def test_bad_override_values_are_refused_by_name() -> None:
    with pytest.raises(OverrideError, match="offload override 'fast'"):
        PlanOverrides.from_dict({"offload": "fast"})
    with pytest.raises(OverrideError, match="unknown plan override"):
        PlanOverrides.from_dict({"vram": 3})
    assert PlanOverrides.from_dict({"storage": "auto", "compile": True}).to_dict() == {"compile": True}
