"""GGUF weights in the planner: when they are chosen, what the plan says they save, which placements
they are planned with, and what the other parts of the model are stored as beside them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_studio.catalog.formats import with_gguf
from wan_studio.catalog.specs import T2V_A14B, TI2V_5B
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.plan import TRANSFORMERS, Limits, Workload
from wan_studio.memory.planner import candidates, choose, plan_ladder

A14B_480 = Workload(832, 480, 81, 40)
TI2V_720 = Workload(1280, 704, 121, 50)
Q5 = int(10.1e9)  # one A14B expert in city96's Q5_K_M file
# A 24 GB card on a 48 GiB PC: two bf16 (57 GB) or fp8 (29 GB) experts beside the text encoder do
# not fit its RAM, the Q5_K pair does.
SMALL_RAM = Hardware((gpu(0, 24),), 48 * GIB, 46 * GIB)
A14B_Q5 = with_gguf(T2V_A14B, {"transformer": (Q5, "Q5_K", False), "transformer_2": (Q5, "Q5_K", False)})


def _layout(plan) -> list[tuple[str, str, str]]:  # noqa: ANN001
    return [(p.component, p.device, p.offload) for p in plan.placements]


def test_gguf_is_chosen_when_the_ram_is_short_and_the_plan_says_what_it_saves() -> None:
    ladder = plan_ladder(A14B_Q5, A14B_480, SMALL_RAM)
    plan = ladder[0]
    assert plan.label == "model offload, GGUF Q5_K transformer" and plan.storage == "gguf"
    assert {p.component: p.storage for p in plan.placements} == {
        "transformer": "gguf", "transformer_2": "gguf", "text_encoder": "bf16", "vae": "fp32"}
    # the same placement with the better weights: bf16 (69 GiB) and fp8 (43 GiB) experts; the note
    # names the lighter of the two
    same = {p.storage: p for p, _ in candidates(A14B_Q5, A14B_480, SMALL_RAM, Limits())
            if _layout(p) == _layout(plan)}
    assert set(same) == {"bf16", "fp8", "gguf"}
    assert same["fp8"].host_ram_bytes < same["bf16"].host_ram_bytes
    note = (f"GGUF Q5_K: {plan.host_ram_bytes / GIB:.0f} GiB of RAM instead of "
            f"{same['fp8'].host_ram_bytes / GIB:.0f} GiB (fp8). ")
    assert note == "GGUF Q5_K: 34 GiB of RAM instead of 43 GiB (fp8). "
    assert plan.why.startswith(note + "model offload, GGUF Q5_K transformer: the faster 'all on GPU' needs ")
    assert plan.why.endswith("GGUF quantised weights: a loss of detail that grows from Q8 to Q4.")
    # the lighter rungs only mention the fallback, not the saving again
    assert all(not p.why.startswith("GGUF") for p in ladder[1:])


def test_under_no_fp8_the_saving_is_told_against_bf16_weights() -> None:
    plan = choose(A14B_Q5, A14B_480, SMALL_RAM, Limits(allow_fp8=False))
    assert plan.label == "model offload, GGUF Q5_K transformer"
    assert plan.why.startswith("GGUF Q5_K: 34 GiB of RAM instead of 69 GiB (bf16). model offload, GGUF Q5_K")


def test_where_gguf_saves_gpu_memory_rather_than_ram_the_plan_says_so() -> None:
    # On a 40 GB card the resident bf16 experts do not fit, the resident Q5_K ones do; resident, both
    # need the same few GiB of RAM, so a RAM comparison would read "4 GiB instead of 4 GiB".
    hw = Hardware((gpu(0, 40),), 48 * GIB, 46 * GIB)
    plan = choose(A14B_Q5, A14B_480, hw, Limits(allow_fp8=False))
    assert plan.label == "all on GPU, GGUF Q5_K transformer"
    bf16 = next(p for p, _ in candidates(A14B_Q5, A14B_480, hw, Limits(allow_fp8=False)) if p.label == "all on GPU")
    assert round(bf16.host_ram_bytes / GIB) == round(plan.host_ram_bytes / GIB)
    assert plan.why.startswith(f"GGUF Q5_K: {plan.peak_vram_gib:.0f} GiB of GPU memory instead of "
                               f"{bf16.peak_vram_gib:.0f} GiB (bf16). all on GPU, GGUF Q5_K transformer: ")
    assert plan.why.startswith("GGUF Q5_K: 34 GiB of GPU memory instead of 68 GiB (bf16). ")


def test_a_gguf_plan_whose_name_has_several_parts_still_names_its_quantisation() -> None:
    plan = choose(A14B_Q5, A14B_480, Hardware((gpu(0, 28),), 32 * GIB, 32 * GIB))
    assert plan.label == "text encoder on CPU, transformer on GPU 0, GGUF Q5_K transformer"
    assert plan.why.startswith("GGUF Q5_K: 23 GiB of GPU memory instead of 32 GiB (fp8). text encoder on CPU, ")


def test_with_ram_to_spare_the_better_weights_win_over_gguf() -> None:
    roomy = replace(SMALL_RAM, host_total_bytes=256 * GIB, host_free_bytes=250 * GIB)
    plan = choose(A14B_Q5, A14B_480, roomy)
    assert plan.storage in ("bf16", "fp8") and "GGUF" not in plan.why


def test_gguf_weights_are_moved_whole_never_streamed_or_split() -> None:
    two = Hardware((gpu(0, 24), gpu(1, 24)), 48 * GIB, 46 * GIB)
    gguf = [p for p, _ in candidates(A14B_Q5, A14B_480, two, Limits()) if p.storage == "gguf"]
    assert [p.label.removesuffix(", GGUF Q5_K transformer") for p in gguf] == [
        "all on GPU", "model offload", "text encoder on CPU, transformer on GPU 0",
        "text encoder on GPU 1, transformer on GPU 0", "one expert per GPU, text encoder streamed on GPU 0",
        "one expert per GPU, text encoder on GPU 1"]
    for plan in gguf:
        assert {plan.placement(t).offload for t in TRANSFORMERS} <= {"resident", "model_offload"}
    # the bf16 text encoder beside them may still be streamed
    assert plan.placement("text_encoder").offload == "resident"
    assert gguf[4].placement("text_encoder").offload == "group_offload"


def test_an_expert_without_a_gguf_file_stays_bf16_in_a_gguf_plan() -> None:
    spec = with_gguf(T2V_A14B, {"transformer": (Q5, "Q5_K", False)})
    gguf = [p for p, _ in candidates(spec, A14B_480, SMALL_RAM, Limits()) if p.storage == "gguf"]
    assert gguf
    for plan in gguf:
        assert {p.component: p.storage for p in plan.placements} == {
            "transformer": "gguf", "transformer_2": "bf16", "text_encoder": "bf16", "vae": "fp32"}


@pytest.mark.parametrize("limits", [Limits(), Limits(allow_fp8=False), Limits(allow_8bit=True)])
def test_with_only_a_gguf_file_on_disk_every_plan_uses_it(limits: Limits) -> None:
    spec = with_gguf(TI2V_5B, {"transformer": (int(5.4e9), "Q8_0", True)})
    hw = Hardware((gpu(0, 24),), 64 * GIB, 64 * GIB)
    every = [p for p, _ in candidates(spec, TI2V_720, hw, limits)]
    assert [p.label for p in every] == ["all on GPU, GGUF Q8_0 transformer", "model offload, GGUF Q8_0 transformer",
                                        "text encoder on CPU, transformer on GPU 0, GGUF Q8_0 transformer"]
    assert {p.storage for p in every} == {"gguf"}
    # nothing in bf16 or fp8 to compare with: the reason starts with the plan itself
    plan = choose(spec, TI2V_720, hw, limits)
    assert plan.why.startswith("all on GPU, GGUF Q8_0 transformer: the fastest way to run it here; ")
    cpu = choose(spec, TI2V_720, Hardware((), 64 * GIB, 64 * GIB), limits)
    assert cpu.label == "cpu, GGUF Q8_0 transformer" and cpu.why.startswith("No GPU found")


def test_a_gguf_file_of_unknown_quantisation_is_called_gguf() -> None:
    spec = with_gguf(T2V_A14B, {"transformer": (Q5, "", False), "transformer_2": (Q5, "", False)})
    plan = choose(spec, A14B_480, SMALL_RAM)
    assert plan.label == "model offload, GGUF transformer"
    assert plan.why.startswith(f"GGUF: {plan.host_ram_bytes / GIB:.0f} GiB of RAM instead of ")
