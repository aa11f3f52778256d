"""Every way the planner considers running a model (the plan names and placements the Advanced tab
lists), which GPU is "GPU 0", and what the plans say about their decode tile and predicted time."""

from __future__ import annotations

import pytest

from wan_studio.catalog.specs import DEMO, T2V_A14B, TI2V_5B
from wan_studio.memory.estimate import estimate
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.plan import Limits, Workload
from wan_studio.memory.planner import _duration, candidates, choose

A14B_480 = Workload(832, 480, 81, 40)
TI2V_720 = Workload(1280, 704, 121, 50)
TWO_CARDS = Hardware((gpu(0, 24), gpu(1, 24)), 128 * GIB, 128 * GIB)
SHORT = {"transformer": "T", "transformer_2": "T2", "text_encoder": "TE", "vae": "VAE"}

# label, storages it is planned in (8-bit allowed), placements (component=device/offload). bitsandbytes
# 8-bit weights cannot be streamed or split by these hooks, so those layouts have no int8 plan.
A14B_ON_TWO_CARDS = [
    ("all on GPU", "bf16 fp8 int8",
     "T=cuda:0/resident T2=cuda:0/resident TE=cuda:0/resident VAE=cuda:0/resident"),
    ("model offload", "bf16 fp8 int8",
     "T=cuda:0/model_offload T2=cuda:0/model_offload TE=cuda:0/model_offload VAE=cuda:0/model_offload"),
    ("block offload with prefetch", "bf16 fp8",
     "T=cuda:0/group_offload T2=cuda:0/group_offload TE=cuda:0/group_offload VAE=cuda:0/group_offload"),
    ("sequential offload", "bf16 fp8",
     "T=cuda:0/sequential T2=cuda:0/sequential TE=cuda:0/sequential VAE=cuda:0/sequential"),
    ("block offload with prefetch, text encoder and VAE model-offloaded", "bf16 fp8",
     "T=cuda:0/group_offload T2=cuda:0/group_offload TE=cuda:0/model_offload VAE=cuda:0/model_offload"),
    ("text encoder on CPU, transformer on GPU 0", "bf16 fp8 int8",
     "T=cuda:0/resident T2=cuda:0/resident TE=cpu/cpu VAE=cuda:0/resident"),
    ("text encoder on CPU, transformer block offload on GPU 0", "bf16 fp8",
     "T=cuda:0/group_offload T2=cuda:0/group_offload TE=cpu/cpu VAE=cuda:0/group_offload"),
    ("text encoder on GPU 1, transformer on GPU 0", "bf16 fp8 int8",
     "T=cuda:0/resident T2=cuda:0/resident TE=cuda:1/resident VAE=cuda:0/resident"),
    ("text encoder on GPU 1, transformer block offload on GPU 0", "bf16 fp8",
     "T=cuda:0/group_offload T2=cuda:0/group_offload TE=cuda:1/resident VAE=cuda:0/group_offload"),
    ("one expert per GPU, text encoder streamed on GPU 0", "bf16 fp8 int8",
     "T=cuda:0/resident T2=cuda:1/resident TE=cuda:0/group_offload VAE=cuda:0/resident"),
    ("one expert per GPU, text encoder on GPU 1", "bf16 fp8 int8",
     "T=cuda:0/resident T2=cuda:1/resident TE=cuda:1/resident VAE=cuda:0/resident"),
    ("transformer split across both GPUs", "bf16 fp8",
     "T=cuda:0,cuda:1/balanced T2=cuda:0,cuda:1/balanced TE=cuda:0/group_offload VAE=cuda:0/resident"),
]


def _rows(spec, work, hw, limits) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(p.label, " ".join(f"{SHORT[q.component]}={q.device}/{q.offload}" for q in p.placements))
            for p, _ in candidates(spec, work, hw, limits)]


def _expected(table: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(label if s == "bf16" else f"{label}, {s} transformer", placements)
            for label, storages, placements in table for s in storages.split()]


def test_on_two_cards_an_a14b_model_is_planned_in_every_layout_and_storage() -> None:
    assert _rows(T2V_A14B, A14B_480, TWO_CARDS, Limits(allow_8bit=True)) == _expected(A14B_ON_TWO_CARDS)
    plans = [p for p, _ in candidates(T2V_A14B, A14B_480, TWO_CARDS, Limits(allow_8bit=True))]
    # the experts carry the plan's storage; the text encoder stays bf16 and the VAE fp32 in every plan
    for plan in plans:
        assert {p.component: p.storage for p in plan.placements} == {
            "transformer": plan.storage, "transformer_2": plan.storage, "text_encoder": "bf16", "vae": "fp32"}
    # without 8-bit allowed the int8 plans are not made at all
    assert _rows(T2V_A14B, A14B_480, TWO_CARDS, Limits()) == [
        r for r in _expected(A14B_ON_TWO_CARDS) if "int8" not in r[0]]


def test_a_single_transformer_model_has_no_expert_per_gpu_layout() -> None:
    single = [(label, storages, placements.replace("T2=cuda:0/resident ", "").replace("T2=cuda:0/model_offload ", "")
               .replace("T2=cuda:0/group_offload ", "").replace("T2=cuda:0/sequential ", "")
               .replace("T2=cuda:0,cuda:1/balanced ", ""))
              for label, storages, placements in A14B_ON_TWO_CARDS if not label.startswith("one expert")]
    assert _rows(TI2V_5B, TI2V_720, TWO_CARDS, Limits(allow_8bit=True)) == _expected(single)


def test_without_a_gpu_there_is_one_layout_and_no_8bit_plan() -> None:
    hw = Hardware((), 64 * GIB, 64 * GIB)
    assert _rows(TI2V_5B, TI2V_720, hw, Limits(allow_8bit=True)) == [
        ("cpu", "T=cpu/cpu TE=cpu/cpu VAE=cpu/cpu"), ("cpu, fp8 transformer", "T=cpu/cpu TE=cpu/cpu VAE=cpu/cpu")]


def test_the_demo_model_gets_the_four_plain_layouts_in_fp32_without_tiling() -> None:
    plans = [p for p, _ in candidates(DEMO, Workload(256, 256, 17, 4), TWO_CARDS, Limits(allow_8bit=True))]
    assert [p.label for p in plans] == ["all on GPU", "model offload", "block offload with prefetch",
                                        "sequential offload"]
    for plan in plans:
        assert {p.storage for p in plan.placements} == {"fp32"}
        assert not plan.vae_tiling and plan.vae_tile == (256, 192)


def test_gpu_0_is_the_card_with_the_most_free_memory() -> None:
    busy_first = Hardware((gpu(0, 24, free_gib=10), gpu(1, 24)), 128 * GIB, 128 * GIB)
    rows = dict(_rows(TI2V_5B, TI2V_720, busy_first, Limits()))
    assert rows["all on GPU"] == "T=cuda:1/resident TE=cuda:1/resident VAE=cuda:1/resident"
    assert rows["text encoder on GPU 1, transformer on GPU 0"] == "T=cuda:1/resident TE=cuda:0/resident VAE=cuda:1/resident"
    plan = choose(TI2V_5B, TI2V_720, busy_first)
    assert plan.primary_device == "cuda:1"


def test_with_room_every_gpu_plan_of_ti2v_decodes_in_big_tiles_a_cpu_one_in_the_default() -> None:
    roomy = Hardware((gpu(0, 80), gpu(1, 80)), 256 * GIB, 256 * GIB)
    plans = [p for p, _ in candidates(TI2V_5B, TI2V_720, roomy, Limits())]
    assert len(plans) == 20 and {p.vae_tile for p in plans} == {(512, 448)}
    cpu = choose(TI2V_5B, TI2V_720, Hardware((), 256 * GIB, 256 * GIB))
    assert cpu.vae_tiling and cpu.vae_tile == (256, 192)


def test_without_a_gpu_the_reason_gives_the_predicted_job_time() -> None:
    hw = Hardware((), 256 * GIB, 256 * GIB)
    plan = choose(TI2V_5B, TI2V_720, hw)
    est = estimate(TI2V_5B, TI2V_720, plan.placements, hw)
    assert plan.phase_s == pytest.approx(est.phases, abs=1e-4)
    assert plan.warm_job_s > 3600  # hours on a CPU
    assert plan.why == (f"No GPU found, so everything runs on the CPU (about {_duration(est.warm_job_s)} "
                        "predicted for the job); a CUDA GPU is far faster.")


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_the_share_of_full_speed_does_not_depend_on_the_step_count(steps: int) -> None:
    # ranked at the model's default steps: a short job gets the plan and the "% of full speed" of a
    # default one (the fixed costs would otherwise weigh more and pick another plan)
    hw = Hardware((gpu(0, 24),), 128 * GIB, 128 * GIB)
    default = choose(T2V_A14B, Workload(1280, 720, 81, 40), hw)
    short = choose(T2V_A14B, Workload(1280, 720, 81, steps), hw)
    assert short.label == default.label
    assert short.relative_speed == pytest.approx(default.relative_speed, rel=1e-9)
    assert short.relative_speed < 1.0


def test_the_plan_record_carries_the_predicted_step_and_job_times() -> None:
    hw = Hardware((gpu(0, 24),), 64 * GIB, 64 * GIB)
    plan = choose(TI2V_5B, TI2V_720, hw)
    est = estimate(TI2V_5B, TI2V_720, plan.placements, hw)
    record = plan.to_dict()  # what the job's sidecar and the API show
    assert (record["step_s"], record["job_s"]) == (est.step_s, est.job_s)
    assert record["model"] == "ti2v-5b" and record["label"] == plan.label
    assert record["host_ram_gib"] == round(est.host_ram_bytes / GIB, 2)
