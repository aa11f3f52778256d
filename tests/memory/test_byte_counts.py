"""The planner's byte counts, component by component and offload mode by offload mode, against
arithmetic done by hand on the model sizes (WAN22_FACTS.md), not against measured peaks: a count
that forgets a part (a streamed transformer's outer layers, an expert, the text embedding) can
still land within 10 % of a measurement, but not on these numbers."""

from __future__ import annotations

import pytest

from wan_studio.catalog.specs import T2V_A14B, TI2V_5B
from wan_studio.memory import costs
from wan_studio.memory.estimate import held_on_gpu, host_ram, in_flight, phase_peaks, stored
from wan_studio.memory.plan import Placement, Workload

GIB = 2**30
WORK = Workload(1280, 704, 121, 50)
# TI2V-5B: 5.00 B transformer parameters, 90 M of them outside its 30 blocks (embedders, head).
TI2V_BF16 = 10_000_000_000
TI2V_OUTER = 180_000_000                                   # 90 M × 2 B, kept bf16 and on the GPU
TI2V_BLOCK = (10_000_000_000 - 180_000_000) // 30          # 327,333,333 B per block in bf16
TI2V_STREAMED = TI2V_OUTER + 5 * TI2V_BLOCK                # outer layers + 5 blocks in flight
TEXT = 11_360_000_000                                      # UMT5-XXL 5.68 B × 2 B
TEXT_STREAMED = 2 * (TEXT - 2_100_297_728) // 24  # 2 of 24 blocks; the 256,384 × 4096 embedding stays on the host
VAE22 = 2_820_000_000                                      # Wan2.2 VAE 0.705 B × 4 B (fp32)
HALF_GIB = 536_870_912                                     # sequential offload: one leaf at a time, at most


def _p(component: str, offload: str, storage: str = "bf16", device: str = "cuda:0") -> Placement:
    return Placement(component, device, storage, offload)  # type: ignore[arg-type]


@pytest.mark.parametrize("storage,expected", [
    ("bf16", TI2V_BF16),
    ("fp8", 4_910_000_000 + TI2V_OUTER),                   # blocks at 1 B, the outer layers stay bf16
    ("int8", int(4_910_000_000 * 1.02) + TI2V_OUTER),      # + one fp32 scale per row, ~2 %
])
def test_transformer_weight_bytes_per_storage(storage: str, expected: int) -> None:
    assert stored(TI2V_5B, _p("transformer", "resident", storage)) == expected


@pytest.mark.parametrize("offload,device,on_gpu_while_computing,held_all_job", [
    ("resident", "cuda:0", TI2V_BF16, TI2V_BF16),
    ("model_offload", "cuda:0", TI2V_BF16, 0),
    ("group_offload", "cuda:0", TI2V_STREAMED, TI2V_OUTER),   # its outer layers never leave the GPU
    ("sequential", "cuda:0", HALF_GIB, 0),
    ("balanced", "cuda:0,cuda:1", TI2V_BF16 // 2, TI2V_BF16 // 2),  # per GPU
    ("cpu", "cpu", TI2V_BF16, 0),
])
def test_transformer_bytes_under_every_offload_mode(offload: str, device: str, on_gpu_while_computing: int,
                                                     held_all_job: int) -> None:
    p = _p("transformer", offload, device=device)
    assert in_flight(TI2V_5B, p) == on_gpu_while_computing
    assert held_on_gpu(TI2V_5B, p) == held_all_job


def test_a_streamed_fp8_transformer_streams_fp8_blocks_around_bf16_outer_layers() -> None:
    p = _p("transformer", "group_offload", "fp8")
    assert in_flight(TI2V_5B, p) == TI2V_OUTER + 5 * (4_910_000_000 // 30)
    assert held_on_gpu(TI2V_5B, p) == TI2V_OUTER


def test_8bit_weights_stay_on_the_gpu_under_model_offload() -> None:
    p = _p("transformer", "model_offload", "int8")
    assert held_on_gpu(TI2V_5B, p) == in_flight(TI2V_5B, p) == int(4_910_000_000 * 1.02) + TI2V_OUTER


@pytest.mark.parametrize("offload,on_gpu_while_computing,held_all_job", [
    ("resident", TEXT, TEXT),
    ("model_offload", TEXT, 0),
    ("group_offload", TEXT_STREAMED, 0),
    ("sequential", HALF_GIB, 0),
])
def test_text_encoder_bytes_under_every_offload_mode(offload: str, on_gpu_while_computing: int,
                                                      held_all_job: int) -> None:
    p = _p("text_encoder", offload)
    assert stored(TI2V_5B, p) == TEXT
    assert in_flight(TI2V_5B, p) == on_gpu_while_computing
    assert held_on_gpu(TI2V_5B, p) == held_all_job


@pytest.mark.parametrize("offload,held_all_job", [("resident", VAE22), ("model_offload", 0), ("group_offload", 0)])
def test_vae_is_whole_on_the_gpu_while_it_decodes(offload: str, held_all_job: int) -> None:
    p = _p("vae", offload, "fp32")
    assert in_flight(TI2V_5B, p) == VAE22 and held_on_gpu(TI2V_5B, p) == held_all_job


def _phases(spec, placements: tuple[Placement, ...]) -> dict[str, int]:
    return {name: devices.get("cuda:0", 0) for name, devices in phase_peaks(spec, WORK, placements).items()}


def test_phase_peaks_with_a_streamed_transformer_count_its_outer_layers_in_every_phase() -> None:
    placements = (_p("transformer", "group_offload"), _p("text_encoder", "model_offload"),
                  _p("vae", "model_offload", "fp32"))
    act = costs.activation_bytes(TI2V_5B, costs.tokens(TI2V_5B, 1280, 704, 121), WORK.image)
    assert _phases(TI2V_5B, placements) == {
        "text_encoder": TI2V_OUTER + TEXT + costs.TEXT_WORK_BYTES,
        "transformer": TI2V_STREAMED + act,
        "vae": TI2V_OUTER + VAE22 + costs.decode_bytes(TI2V_5B, 1280, 704, 121),
    }


def test_phase_peaks_with_everything_resident_hold_every_weight_in_every_phase() -> None:
    placements = (_p("transformer", "resident"), _p("text_encoder", "resident"), _p("vae", "resident", "fp32"))
    weights = TI2V_BF16 + TEXT + VAE22
    act = costs.activation_bytes(TI2V_5B, costs.tokens(TI2V_5B, 1280, 704, 121), WORK.image)
    assert _phases(TI2V_5B, placements) == {
        "text_encoder": weights + costs.TEXT_WORK_BYTES,
        "transformer": weights + act,
        "vae": weights + costs.decode_bytes(TI2V_5B, 1280, 704, 121),
    }


def test_a_text_encoder_on_the_cpu_costs_no_gpu_bytes() -> None:
    placements = (_p("transformer", "model_offload"), _p("text_encoder", "cpu", device="cpu"),
                  _p("vae", "model_offload", "fp32"))
    phases = phase_peaks(TI2V_5B, WORK, placements)
    assert "text_encoder" not in phases
    assert phases["vae"] == {"cuda:0": VAE22 + costs.decode_bytes(TI2V_5B, 1280, 704, 121)}


def test_two_streamed_experts_each_keep_their_outer_layers_on_the_gpu() -> None:
    outer = 464_000_000                                     # 232 M parameters outside an expert's 40 blocks, bf16
    streamed = outer + 5 * ((28_580_000_000 - outer) // 40)
    placements = (_p("transformer", "group_offload"), _p("transformer_2", "group_offload"),
                  _p("text_encoder", "model_offload"), _p("vae", "model_offload", "fp32"))
    work = Workload(1280, 720, 81, 40)
    act = costs.activation_bytes(T2V_A14B, costs.tokens(T2V_A14B, 1280, 720, 81), work.image)
    phases = {n: d["cuda:0"] for n, d in phase_peaks(T2V_A14B, work, placements).items()}
    assert phases["text_encoder"] == 2 * outer + TEXT + costs.TEXT_WORK_BYTES
    # While one expert computes, the other's outer layers are still there.
    assert phases["transformer"] == phases["transformer_2"] == streamed + outer + act
    assert phases["vae"] == 2 * outer + 508_000_000 + costs.decode_bytes(T2V_A14B, 1280, 720, 81)


def test_host_ram_holds_what_the_gpu_does_not() -> None:
    overhead = costs.HOST_OVERHEAD_BYTES
    streamed = (_p("transformer", "group_offload"), _p("text_encoder", "model_offload"),
                _p("vae", "model_offload", "fp32"))
    assert host_ram(TI2V_5B, streamed) == overhead + TI2V_BF16 + TEXT + VAE22
    resident = (_p("transformer", "resident"), _p("text_encoder", "resident"), _p("vae", "resident", "fp32"))
    assert host_ram(TI2V_5B, resident) == overhead
    # An fp8 transformer is read in bf16 before it is cast: 10 GB at once, under the 19.27 GB held after.
    fp8 = (_p("transformer", "model_offload", "fp8"), _p("text_encoder", "model_offload"),
           _p("vae", "model_offload", "fp32"))
    assert host_ram(TI2V_5B, fp8) == overhead + 5_090_000_000 + TEXT + VAE22
    fp8_alone = (_p("transformer", "model_offload", "fp8"), _p("text_encoder", "resident"),
                 _p("vae", "resident", "fp32"))
    assert host_ram(TI2V_5B, fp8_alone) == overhead + TI2V_BF16  # the load peak, not the 5.09 GB kept


def test_only_what_moves_between_host_and_gpu_is_pinned() -> None:
    from wan_studio.memory.estimate import pinned_bytes

    placements = (_p("transformer", "group_offload"), _p("text_encoder", "model_offload"), _p("vae", "resident", "fp32"))
    on_cpu = (_p("transformer", "group_offload"), _p("text_encoder", "cpu", device="cpu"), _p("vae", "resident", "fp32"))
    assert pinned_bytes(TI2V_5B, on_cpu) == TI2V_BF16  # a text encoder computing on the CPU is not pinned
    # the streamed transformer's host copy and the text encoder's; the resident VAE never leaves the GPU
    assert pinned_bytes(TI2V_5B, placements) == TI2V_BF16 + TEXT
    # the load waits for the streamed transformer's copies; the seated text encoder's are pinned after
    assert pinned_bytes(TI2V_5B, placements, "load") == TI2V_BF16
    assert pinned_bytes(TI2V_5B, placements, "behind") == TEXT


def test_a_cold_load_of_a_model_offload_plan_waits_for_no_page_locking() -> None:
    from wan_studio.memory import costs
    from wan_studio.memory.estimate import load_s

    seated = (_p("transformer", "model_offload"), _p("text_encoder", "model_offload"),
              _p("vae", "model_offload", "fp32"))
    read = (TI2V_BF16 + TEXT + VAE22) / costs.LOAD_READ_BYTES_PER_S
    assert load_s(TI2V_5B, seated) == pytest.approx(read)
    streamed = (_p("transformer", "group_offload"),) + seated[1:]
    assert load_s(TI2V_5B, streamed) == pytest.approx(read + TI2V_BF16 / costs.PIN_BYTES_PER_S)


def test_loading_fp8_parts_one_after_another_holds_the_cast_ones_beside_the_next_bf16_copy() -> None:
    # Read in bf16, cast to fp8 afterwards: loading the last expert holds the text encoder and the
    # first expert already cast, beside the last one's bf16 copy.
    placements = (_p("text_encoder", "model_offload", "fp8"), _p("transformer", "model_offload", "fp8"),
                  _p("transformer_2", "model_offload", "fp8"), _p("vae", "resident", "fp32"))
    text_fp8 = 5_680_000_000
    expert_fp8 = stored(T2V_A14B, placements[1])
    expert_bf16 = 14_290_000_000 * 2
    assert host_ram(T2V_A14B, placements) == costs.HOST_OVERHEAD_BYTES + text_fp8 + expert_fp8 + expert_bf16
