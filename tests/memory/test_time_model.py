"""The planner's time model lever by lever, against arithmetic done by hand from the cost constants
(memory/costs.py, each fitted to a GPU measurement in docs/BENCHMARKS.md): where a plan moves bytes
or computes slower (fp8, 8-bit, GGUF, no bf16 cores, streamed blocks, leaf-by-leaf copies, a split
over two cards, a CPU), the predicted step and job times must move by exactly that lever. A
prediction within ±20 % of one measured size can still carry a lever that is wrong everywhere else."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_studio.catalog.specs import T2V_A14B, TI2V_5B
from wan_studio.memory import costs
from wan_studio.memory.estimate import params_of, phase_times, stored, timing
from wan_studio.memory.hardware import GpuInfo, Hardware
from wan_studio.memory.plan import Placement, Workload

GIB = 2**30
RTX3090 = GpuInfo(0, "RTX 3090", 24 * GIB, 23 * GIB, (8, 6), bf16_tflops=71.0, pcie_gbps=22.0)
TURING = GpuInfo(0, "RTX 2080 Ti", 11 * GIB, 10 * GIB, (7, 5), bf16_tflops=26.0, pcie_gbps=12.0)
HW = Hardware(gpus=(RTX3090,), host_total_bytes=64 * GIB, host_free_bytes=60 * GIB)
WORK = Workload(1280, 704, 121, 4)
SMALL = Workload(64, 64, 5, 2)
UMT5_PARAMS = 5_680_000_000  # UMT5-XXL's encoder (WAN22_FACTS.md)  # a few tokens: kernel launches, not FLOPs, set the step


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    """Triton absent (this machine): every transformer runs eager unless a test says otherwise."""
    monkeypatch.setattr(costs, "triton_installed", lambda: False)


def _p(component: str, offload: str, storage: str = "bf16", device: str = "cuda:0") -> Placement:
    return Placement(component, device, storage, offload)  # type: ignore[arg-type]


def _pipeline(transformer: Placement, text: str = "resident", vae: str = "resident",
              text_device: str = "cuda:0") -> tuple[Placement, ...]:
    return (transformer, _p("text_encoder", text, device=text_device), _p("vae", vae, storage="fp32"))


def _compute(spec, work: Workload, gpu: GpuInfo, storage_factor: float = 1.0, mfu: float = costs.MFU_EAGER) -> float:
    flops = costs.forward_flops(spec, work.width, work.height, work.frames) * work.passes_per_step
    slow = 1.0 if gpu.has_bf16 else 3.0
    return flops / (gpu.tflops * 1e12 * mfu) * slow * storage_factor


def _launches(spec, work: Workload) -> float:
    return work.passes_per_step * costs.ops_per_forward(spec) * costs.GPU_PROFILE.op_overhead_s


@pytest.mark.parametrize("storage,factor", [
    ("bf16", 1.0), ("fp8", costs.FP8_COMPUTE_FACTOR), ("int8", costs.INT8_COMPUTE_FACTOR),
    ("gguf", costs.GGUF_COMPUTE_FACTOR)])
def test_a_resident_step_is_its_flops_at_the_gpu_rate_times_the_storage_slowdown(storage, factor):
    step_s, job_s, ideal_s = timing(TI2V_5B, WORK, _pipeline(_p("transformer", "resident", storage)), HW)
    expected = _compute(TI2V_5B, WORK, RTX3090, factor)
    assert expected > _launches(TI2V_5B, WORK)  # a 720p step is compute-bound
    assert step_s == pytest.approx(expected, rel=1e-9)
    assert job_s == pytest.approx(WORK.steps * expected, rel=1e-9)  # everything else stays on the GPU
    assert ideal_s == pytest.approx(WORK.steps * _compute(TI2V_5B, WORK, RTX3090), rel=1e-9)


def test_a_gpu_without_bf16_cores_computes_three_times_slower():
    hw = Hardware(gpus=(TURING,))
    step_s, _, _ = timing(TI2V_5B, WORK, _pipeline(_p("transformer", "resident")), hw)
    assert step_s == pytest.approx(_compute(TI2V_5B, WORK, TURING), rel=1e-9)
    assert step_s == pytest.approx(3 * WORK.passes_per_step * costs.forward_flops(TI2V_5B, 1280, 704, 121)
                                   / (26.0e12 * costs.MFU_EAGER), rel=1e-9)


def test_a_tiny_step_is_as_long_as_its_kernel_launches_and_compiled_it_has_none(monkeypatch):
    placements = _pipeline(_p("transformer", "resident"))
    step_s, _, _ = timing(TI2V_5B, SMALL, placements, HW)
    assert _compute(TI2V_5B, SMALL, RTX3090) < _launches(TI2V_5B, SMALL)
    assert step_s == pytest.approx(_launches(TI2V_5B, SMALL), rel=1e-9)
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    compiled_s, _, _ = timing(TI2V_5B, SMALL, placements, HW)
    assert compiled_s == pytest.approx(_compute(TI2V_5B, SMALL, RTX3090, mfu=costs.MFU_COMPILED), rel=1e-9)


@pytest.mark.parametrize("work", [WORK, SMALL])
def test_streamed_blocks_cost_the_transfer_the_compute_cannot_hide_plus_the_exposed_share(work):
    t = _p("transformer", "group_offload")
    step_s, _, _ = timing(TI2V_5B, work, _pipeline(t), HW)
    compute = max(_compute(TI2V_5B, work, RTX3090), _launches(TI2V_5B, work))
    transfer = work.passes_per_step * stored(TI2V_5B, t) / 22e9
    expected = compute + max(transfer - compute, 0.0) + costs.GROUP_TRANSFER_EXPOSED * transfer
    assert step_s == pytest.approx(expected, rel=1e-9)


def test_leaf_by_leaf_copies_cost_every_byte_at_a_quarter_of_the_link_and_a_split_over_two_cards_two_percent():
    t = _p("transformer", "sequential")
    step_s, _, _ = timing(TI2V_5B, WORK, _pipeline(t), HW)
    copies = WORK.passes_per_step * stored(TI2V_5B, t) / (22e9 * costs.SEQUENTIAL_LINK_FACTOR)
    assert step_s == pytest.approx(_compute(TI2V_5B, WORK, RTX3090) + copies, rel=1e-9)
    two = Hardware(gpus=(RTX3090, GpuInfo(1, "RTX 3090", 24 * GIB, 23 * GIB, (8, 6), 71.0, 22.0)))
    balanced, _, _ = timing(TI2V_5B, WORK, _pipeline(_p("transformer", "balanced", device="cuda:0,cuda:1")), two)
    assert balanced == pytest.approx(1.02 * _compute(TI2V_5B, WORK, RTX3090), rel=1e-9)


def test_a_cpu_step_is_its_flops_at_the_cpu_rate_plus_every_op_dispatch():
    t = _p("transformer", "cpu", device="cpu")
    step_s, job_s, ideal_s = timing(TI2V_5B, SMALL, (t, _p("text_encoder", "cpu", device="cpu"),
                                                     _p("vae", "cpu", "fp32", "cpu")), Hardware())
    flops = costs.forward_flops(TI2V_5B, 64, 64, 5) * SMALL.passes_per_step
    expected = (flops / (costs.CPU_TFLOPS * 1e12 * costs.cpu_efficiency(TI2V_5B))
                + SMALL.passes_per_step * costs.ops_per_forward(TI2V_5B) * costs.CPU_PROFILE.op_overhead_s)
    assert step_s == pytest.approx(expected, rel=1e-9)
    assert ideal_s == pytest.approx(SMALL.steps * expected, rel=1e-9)
    # The text encoder runs on the CPU once per job: UMT5's FLOPs over the prompt and the negative one.
    prompts = 2 if SMALL.cfg else 1
    text = 2 * UMT5_PARAMS * costs.arch(TI2V_5B).text_len * prompts
    assert job_s == pytest.approx(SMALL.steps * expected + text / (costs.CPU_TFLOPS * 1e12), rel=1e-9)


def test_parameter_counts_are_the_released_models():
    assert params_of(TI2V_5B, "text_encoder") == UMT5_PARAMS
    assert (params_of(TI2V_5B, "transformer"), params_of(TI2V_5B, "vae")) == (5_000_000_000, 705_000_000)
    assert params_of(T2V_A14B, "transformer_2") == 14_290_000_000
    assert params_of(TI2V_5B, "transformer_2") == 0  # one transformer only


def test_each_expert_computes_half_the_steps_of_a_two_expert_model():
    fast, slow = _p("transformer", "resident"), _p("transformer_2", "resident", storage="int8")
    step_s, _, ideal_s = timing(T2V_A14B, WORK, (fast, slow, _p("text_encoder", "resident"),
                                                 _p("vae", "resident", "fp32")), HW)
    one = _compute(T2V_A14B, WORK, RTX3090)
    assert step_s == pytest.approx((one + one * costs.INT8_COMPUTE_FACTOR) / 2, rel=1e-9)
    assert ideal_s == pytest.approx(WORK.steps * one, rel=1e-9)


@pytest.mark.parametrize("text,vae", [("model_offload", "resident"), ("resident", "model_offload"),
                                      ("model_offload", "model_offload"), ("resident", "group_offload")])
def test_a_job_pays_once_for_each_component_it_moves_onto_the_gpu(text, vae):
    t = _p("transformer", "resident")
    placements = _pipeline(t, text=text, vae=vae)
    step_s, job_s, _ = timing(TI2V_5B, WORK, placements, HW)
    moved = 0.0
    for p in placements[1:]:
        if p.offload == "model_offload":
            moved += stored(TI2V_5B, p) / (22e9 * costs.MODEL_OFFLOAD_LINK_FACTOR)
        elif p.offload == "group_offload":
            moved += 2 * stored(TI2V_5B, p) / 22e9  # there and back
    assert moved > 0.1
    assert job_s == pytest.approx(WORK.steps * step_s + moved, rel=1e-9)


def test_the_phases_of_a_job_add_the_moves_of_the_components_each_phase_uses(monkeypatch):
    t = _p("transformer", "model_offload")
    placements = _pipeline(t, text="model_offload", vae="model_offload")
    phases = phase_times(TI2V_5B, WORK, placements, HW)
    step_s, _, _ = timing(TI2V_5B, WORK, placements, HW)

    def onload(p: Placement) -> float:
        return stored(TI2V_5B, p) / (22e9 * costs.MODEL_OFFLOAD_LINK_FACTOR)

    prompts = 2 if WORK.cfg else 1
    text = 2 * UMT5_PARAMS * costs.arch(TI2V_5B).text_len * prompts
    assert phases["text_s"] == pytest.approx(costs.GPU_PROFILE.text_fixed_s + onload(placements[1])
                                             + text / (71e12 * costs.TEXT_MFU), rel=1e-9)
    assert phases["steps_s"] == pytest.approx(WORK.steps * step_s + onload(t), rel=1e-9)
    decode = costs.decode_s(TI2V_5B, 1280, 704, 121, costs.GPU_PROFILE, 71.0)
    assert phases["decode_s"] == pytest.approx(decode + onload(placements[2]), rel=1e-9)
    assert phases["write_s"] == pytest.approx(costs.write_s(1280, 704, 121, costs.GPU_PROFILE), rel=1e-9)
    assert phases["compile_s"] == costs.FIRST_CALL_S and phases["recompile_s"] == 0.0
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    compiled = phase_times(TI2V_5B, WORK, placements, HW)
    assert compiled["compile_s"] == costs.COMPILE_FIRST_S
    assert compiled["recompile_s"] == costs.RECOMPILE_NEW_SHAPE_S


def test_two_compiled_experts_compile_once_plus_the_second_experts_share(monkeypatch):
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    placements = (_p("transformer", "resident"), _p("transformer_2", "resident"), _p("text_encoder", "resident"),
                  _p("vae", "resident", "fp32"))
    phases = phase_times(T2V_A14B, WORK, placements, HW)
    assert phases["compile_s"] == pytest.approx(costs.A14B_COMPILE_FIRST_S + costs.COMPILE_MORE_EXPERT_S, rel=1e-9)


def test_a_cpu_shared_with_other_work_stretches_every_phase_by_its_load():
    placements = (_p("transformer", "cpu", device="cpu"), _p("text_encoder", "cpu", device="cpu"),
                  _p("vae", "cpu", "fp32", "cpu"))
    alone = phase_times(TI2V_5B, SMALL, placements, Hardware())
    busy = phase_times(TI2V_5B, SMALL, placements, Hardware(cpu_busy=2.5))
    assert alone["compile_s"] == 0.0 and alone["text_s"] > 0
    assert set(busy) == set(alone)
    for phase, seconds in alone.items():
        assert busy[phase] == pytest.approx(2.5 * seconds, rel=1e-9), phase


def test_a_narrow_transformer_reaches_its_share_of_the_cpu_rate():
    from wan_studio.catalog.specs import DEMO

    assert costs.cpu_efficiency(DEMO) < 1.0  # the demo's 24-wide layers
    t = _p("transformer", "cpu", device="cpu")
    step_s, _, _ = timing(DEMO, SMALL, (t, _p("vae", "cpu", "fp32", "cpu")), Hardware())
    flops = costs.forward_flops(DEMO, 64, 64, 5) * SMALL.passes_per_step
    assert step_s == pytest.approx(flops / (costs.CPU_TFLOPS * 1e12 * costs.cpu_efficiency(DEMO))
                                   + SMALL.passes_per_step * costs.ops_per_forward(DEMO) * costs.CPU_PROFILE.op_overhead_s,
                                   rel=1e-9)


def test_two_experts_on_the_cpu_take_one_cpu_step_per_step():
    experts = (_p("transformer", "cpu", device="cpu"), _p("transformer_2", "cpu", device="cpu"))
    step_s, _, ideal_s = timing(T2V_A14B, SMALL, (*experts, _p("vae", "cpu", "fp32", "cpu")), Hardware())
    flops = costs.forward_flops(T2V_A14B, 64, 64, 5) * SMALL.passes_per_step
    one = (flops / (costs.CPU_TFLOPS * 1e12 * costs.cpu_efficiency(T2V_A14B))
           + SMALL.passes_per_step * costs.ops_per_forward(T2V_A14B) * costs.CPU_PROFILE.op_overhead_s)
    assert step_s == pytest.approx(one, rel=1e-9) and ideal_s == pytest.approx(SMALL.steps * one, rel=1e-9)


def test_a_text_encoder_on_the_cpu_adds_its_forwards_to_a_gpu_job_that_also_moves_the_transformer():
    t = _p("transformer", "model_offload")
    placements = (t, _p("text_encoder", "cpu", device="cpu"), _p("vae", "resident", "fp32"))
    step_s, job_s, _ = timing(TI2V_5B, WORK, placements, HW)
    onload = stored(TI2V_5B, t) / (22e9 * costs.MODEL_OFFLOAD_LINK_FACTOR)
    text = 2 * UMT5_PARAMS * costs.arch(TI2V_5B).text_len * 2 / (costs.CPU_TFLOPS * 1e12)  # guided: two prompts
    assert job_s == pytest.approx(WORK.steps * step_s + onload + text, rel=1e-9)


@pytest.mark.parametrize("cfg,prompts", [(True, 2), (False, 1)])
def test_text_encoding_covers_the_negative_prompt_only_under_guidance(cfg, prompts):
    work = Workload(1280, 704, 121, 4, cfg=cfg)
    phases = phase_times(TI2V_5B, work, _pipeline(_p("transformer", "resident")), HW)
    text = 2 * UMT5_PARAMS * costs.arch(TI2V_5B).text_len * prompts / (71e12 * costs.TEXT_MFU)
    assert phases["text_s"] == pytest.approx(costs.GPU_PROFILE.text_fixed_s + text, rel=1e-9)


@pytest.mark.parametrize("offload", ["group_offload", "sequential"])
def test_a_streamed_vae_or_text_encoder_crosses_the_link_there_and_back(offload):
    placements = _pipeline(_p("transformer", "resident"), text=offload, vae=offload)
    step_s, job_s, _ = timing(TI2V_5B, WORK, placements, HW)
    # a block-offloaded UMT5 leaves its 256,384 × 4096 token embedding on the host (apply.embed_on_host)
    embed = {"group_offload": 256_384 * 4096 * 2, "sequential": 0}[offload]
    moved = sum(2 * (stored(TI2V_5B, p) - (embed if p.component == "text_encoder" else 0)) / 22e9
                for p in placements[1:])
    assert job_s == pytest.approx(WORK.steps * step_s + moved, rel=1e-9)


def test_a_job_decodes_and_writes_at_the_rates_of_the_device_its_vae_is_on():
    from wan_studio.catalog.specs import DEMO  # its decode is launch-bound: the two devices differ

    cpu = (_p("transformer", "cpu", device="cpu"), _p("vae", "cpu", "fp32", "cpu"))
    phases = phase_times(DEMO, SMALL, cpu, Hardware())
    assert phases["decode_s"] == pytest.approx(costs.decode_s(DEMO, 64, 64, 5, costs.CPU_PROFILE, None), rel=1e-9)
    assert phases["write_s"] == pytest.approx(costs.write_s(64, 64, 5, costs.CPU_PROFILE), rel=1e-9)
    gpu = phase_times(DEMO, SMALL, (_p("transformer", "resident"), _p("vae", "resident", "fp32")), HW)
    assert gpu["decode_s"] == pytest.approx(costs.decode_s(DEMO, 64, 64, 5, costs.GPU_PROFILE, 71.0), rel=1e-9)
    assert gpu["write_s"] == pytest.approx(costs.write_s(64, 64, 5, costs.GPU_PROFILE), rel=1e-9)
    assert gpu["decode_s"] != pytest.approx(phases["decode_s"]) and gpu["write_s"] != pytest.approx(phases["write_s"])


def test_speech_to_video_denoises_decodes_and_writes_every_chunk_of_its_speech():
    """Five seconds of speech is two 80-frame chunks (the first gives 3 frames fewer): each is
    denoised for the job's steps and decoded, and the clip written is both chunks long; the text
    is encoded once. On the GPU machine the one-chunk prediction said 27 s for a 56 s job."""
    from wan_studio.catalog.specs import get_spec

    s2v = get_spec("s2v-14b")
    placements = (Placement("transformer", "cuda:0", "bf16", "group_offload"),
                  Placement("text_encoder", "cuda:0", "bf16", "model_offload"),
                  Placement("vae", "cuda:0", "fp32", "model_offload"),
                  Placement("audio_encoder", "cuda:0", "fp32", "model_offload"))
    one = Workload(832, 480, 80, 2)
    two = Workload(832, 480, 80, 2, chunks=2, video_frames=80)
    a, b = phase_times(s2v, one, placements, HW), phase_times(s2v, two, placements, HW)
    step_s, job_one, _ = timing(s2v, one, placements, HW)
    _, job_two, _ = timing(s2v, two, placements, HW)
    assert job_two - job_one == pytest.approx(2 * step_s, rel=1e-9)  # two more steps, nothing else
    moves = a["steps_s"] - 2 * step_s  # the transformer's move onto the GPU, once per job
    assert b["steps_s"] == pytest.approx(4 * step_s + moves, rel=1e-9)
    # A chunk decodes with what leads it: the first with the reference frame (81 frames), the next
    # with its 19 motion latents (153), after encoding the 73 motion frames; the VAE moves on once.
    first = costs.decode_s(s2v, 832, 480, 81, costs.GPU_PROFILE, RTX3090.tflops)
    later = (costs.decode_s(s2v, 832, 480, 153, costs.GPU_PROFILE, RTX3090.tflops)
             + costs.S2V_ENCODE_OVER_DECODE * costs.decode_s(s2v, 832, 480, 73, costs.GPU_PROFILE, RTX3090.tflops))
    assert a["decode_s"] - first == pytest.approx(b["decode_s"] - first - later, rel=1e-9)
    assert b["decode_s"] - a["decode_s"] == pytest.approx(later, rel=1e-9)
    # the mp4 is as long as the speech (80 frames), not the two chunks (160)
    assert b["write_s"] == pytest.approx(costs.write_s(832, 480, 80, costs.GPU_PROFILE), rel=1e-9)
    assert phase_times(s2v, replace(two, video_frames=0), placements, HW)["write_s"] == pytest.approx(
        costs.write_s(832, 480, 160, costs.GPU_PROFILE), rel=1e-9)
    assert b["text_s"] == a["text_s"]


def test_speech_to_video_holds_every_chunks_frames_in_ram_until_the_last_is_decoded():
    from wan_studio.catalog.specs import get_spec
    from wan_studio.memory.estimate import host_ram

    s2v = get_spec("s2v-14b")
    resident = (Placement("transformer", "cuda:0", "bf16", "resident"),)
    one, three = Workload(832, 480, 80, 2), Workload(832, 480, 80, 2, chunks=3)
    grown = host_ram(s2v, resident, three) - host_ram(s2v, resident, one)
    assert grown == costs.decode_host_bytes(832, 480, 240) - costs.decode_host_bytes(832, 480, 80)
    assert grown > 0


def test_image_to_video_counts_the_encode_of_its_condition_video() -> None:
    # I2V-A14B encodes the image and frames - 1 blank frames with the VAE before its first step
    from wan_studio.catalog.specs import get_spec

    i2v, work = get_spec("i2v-a14b"), Workload(832, 480, 81, 40, image=True)
    placements = _pipeline(_p("transformer", "group_offload"), "model_offload", "model_offload")
    ph = phase_times(i2v, work, placements + (_p("transformer_2", "group_offload"),), HW)
    decode_only = costs.decode_s(i2v, 832, 480, 81, costs.GPU_PROFILE, RTX3090.tflops)
    assert ph["condition_s"] == pytest.approx(costs.I2V_CONDITION_OVER_DECODE * decode_only)
    assert ph["condition_s"] > 1.0
    t2v = phase_times(T2V_A14B, replace(work, image=False), placements + (_p("transformer_2", "group_offload"),), HW)
    assert t2v["condition_s"] == 0.0
    assert "condition_s" in costs.JOB_PHASES  # counted in every job's time
