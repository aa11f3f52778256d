"""The cost model against the measurements it was fitted to (memory/costs.py names each one): the
times a user sees as the job's estimate, the token counts and activation bytes the memory plan
rests on, and when the worker compiles."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wan_studio.catalog.specs import DEMO, S2V_14B, T2V_A14B, TI2V_5B
from wan_studio.memory import costs

GIB = 2**30


@pytest.mark.parametrize("spec, size, measured_s", [
    (TI2V_5B, (1280, 704, 121), (14.3, 15.9)),    # Wan2.2 VAE, 720p 5 s
    (TI2V_5B, (1920, 1088, 241), (69.6, 71.2)),   # 1080p 10 s
    (T2V_A14B, (832, 480, 81), (7.6, 8.1)),       # Wan2.1 VAE, 7.84 s measured
    (T2V_A14B, (1280, 720, 81), (13.2, 14.0)),    # 13.59 s measured
])
def test_decode_time_on_the_reference_gpu_matches_the_measurements(spec, size, measured_s) -> None:
    low, high = measured_s
    assert low * 0.97 <= costs.decode_s(spec, *size, costs.GPU_PROFILE, costs.REF_TFLOPS) <= high * 1.03


def test_decode_time_scales_with_the_gpu_and_the_cpu_is_far_slower() -> None:
    ref = costs.decode_s(T2V_A14B, 1280, 720, 81, costs.GPU_PROFILE, costs.REF_TFLOPS)
    assert costs.decode_s(T2V_A14B, 1280, 720, 81, costs.GPU_PROFILE, costs.REF_TFLOPS / 2) == pytest.approx(2 * ref)
    cpu = costs.decode_s(T2V_A14B, 1280, 720, 81, costs.CPU_PROFILE, None)
    assert cpu == pytest.approx(ref * costs.REF_TFLOPS / costs.CPU_TFLOPS)


@pytest.mark.parametrize("size, measured_s", [((256, 256, 17), 3.1), ((512, 512, 17), 10.2)])
def test_demo_decode_on_a_cpu_pays_its_ops_and_its_pixels(size, measured_s) -> None:
    s = costs.decode_s(DEMO, *size, costs.CPU_PROFILE, None)
    assert s == pytest.approx(costs.DEMO_DECODE_OPS * costs.CPU_PROFILE.op_overhead_s
                              + costs.mpx(*size) * costs.CPU_PROFILE.demo_decode_s_per_mpx)
    assert measured_s * 0.85 <= s <= measured_s * 1.15


def test_on_a_gpu_op_launches_overlap_the_demo_decode() -> None:
    overlapped = costs.decode_s(DEMO, 64, 64, 5, costs.GPU_PROFILE, costs.REF_TFLOPS)
    ops = costs.DEMO_DECODE_OPS * costs.GPU_PROFILE.op_overhead_s
    assert overlapped == pytest.approx(max(ops, costs.mpx(64, 64, 5) * costs.GPU_PROFILE.demo_decode_s_per_mpx))
    serial = costs.decode_s(DEMO, 64, 64, 5, replace(costs.GPU_PROFILE, ops_overlap=False), costs.REF_TFLOPS)
    assert serial == pytest.approx(ops + costs.mpx(64, 64, 5) * costs.GPU_PROFILE.demo_decode_s_per_mpx)


# the mp4 written and its settings tag added, H200 machine, 2026-12-02 (docs/BENCHMARKS.md)
@pytest.mark.parametrize("size, measured_s", [((1280, 704, 121), (3.0, 4.3)), ((1920, 1088, 241), (13.7, 14.6))])
def test_mp4_write_time_on_the_gpu_machine_matches_the_measurements(size, measured_s) -> None:
    low, high = measured_s
    assert low * 0.97 <= costs.write_s(*size, costs.GPU_PROFILE) <= high * 1.03


def test_cpu_mp4_write_and_op_counts() -> None:
    assert costs.write_s(256, 256, 17, costs.CPU_PROFILE) == pytest.approx(0.2 + 1.114112 * 0.14)
    assert costs.ops_per_forward(DEMO) == 1105  # measured: 1,105 ops per demo forward
    assert costs.ops_per_forward(T2V_A14B) == 305 + 400 * 40
    assert costs.cpu_efficiency(DEMO) == pytest.approx(32 / 2048) and costs.cpu_efficiency(T2V_A14B) == 1.0


def test_latent_tokens_of_the_calibration_sizes() -> None:
    assert costs.tokens(T2V_A14B, 832, 480, 81) == 32_760  # the fp8 calibration job
    assert costs.tokens(TI2V_5B, 1920, 1088, 121) == 63_240
    assert costs.tokens(TI2V_5B, 1280, 704, 121) == 31 * 22 * 40


def test_activation_bytes_per_token_dim_with_and_without_a_start_image() -> None:
    n = costs.tokens(TI2V_5B, 1920, 1088, 121)
    # fitted on 1080p 5 s and 10 s from an image (7.05 GiB measured at 5 s, model offload)
    assert costs.activation_bytes(TI2V_5B, n, image=True) == int(n * 3072 * 36.0)
    assert costs.activation_bytes(TI2V_5B, n, image=True) / GIB == pytest.approx(7.05, rel=0.10)
    assert costs.activation_bytes(TI2V_5B, n, image=False) == int(n * 3072 * 15.0)
    assert costs.activation_bytes(TI2V_5B, n) == costs.activation_bytes(TI2V_5B, n, image=True)  # the safe side
    a14b = costs.tokens(T2V_A14B, 832, 480, 81)
    assert costs.activation_bytes(T2V_A14B, a14b, image=True) / GIB == pytest.approx(3.98, abs=0.01)


def test_the_worker_compiles_bf16_diffusers_transformers_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    assert costs.compiles(TI2V_5B, "bf16", "model_offload") and costs.compiles(T2V_A14B, "bf16", "group_offload")
    assert not costs.compiles(TI2V_5B, "fp8", "model_offload")
    assert not costs.compiles(TI2V_5B, "bf16", "sequential")
    assert not costs.compiles(S2V_14B, "bf16", "resident")  # our own S2V class: no named blocks to compile
    monkeypatch.setattr(costs, "triton_installed", lambda: False)
    assert not costs.compiles(TI2V_5B, "bf16", "model_offload")


def test_flops_of_a_forward_count_every_matmul() -> None:
    n, d, t, f, layers = 32_760, 5120, 512, 13824, 40
    per_layer = 8 * n * d * d + 4 * n * n * d + 4 * n * d * d + 4 * t * d * d + 4 * n * t * d + 4 * n * d * f
    assert costs.flops_per_forward(T2V_A14B, n) == float(per_layer * layers)
    assert costs.flops_per_forward(T2V_A14B, 2 * n) > 2 * costs.flops_per_forward(T2V_A14B, n)  # attention is n²


def test_stored_bytes_per_storage_and_gguf_files_by_their_size() -> None:
    assert costs.stored_bytes(1000, "fp32") == 4000 and costs.stored_bytes(1000, "bf16") == 2000
    assert costs.stored_bytes(1000, "fp8", nonblock_params=100) == 900 + 200
    assert costs.stored_bytes(1000, "fp8") == 1000  # no outer layers named: all of it at one byte
    assert costs.stored_bytes(1000, "int8", nonblock_params=100) == int(900 * 1.02 + 200)
    expert = next(c for c in T2V_A14B.components if c.name == "transformer")
    assert costs.component_bytes(replace(expert, gguf_bytes=123), "gguf") == 123
    assert costs.component_bytes(expert, "bf16") == expert.params * 2
    assert costs.component_bytes(expert, "fp8") == expert.params


def test_block_and_decode_bytes() -> None:
    expert = next(c for c in T2V_A14B.components if c.name == "transformer")
    assert costs.block_bytes(T2V_A14B, expert.params, "bf16") == int((expert.params - 232_000_000) * 2 / 40)
    assert costs.decode_bytes(DEMO, 64, 48, 5) == 2 * 5 * 3 * 48 * 64 * 4
    assert costs.decode_bytes(TI2V_5B, 1280, 704, 121) == int(3.0 * GIB)
    assert costs.decode_bytes(T2V_A14B, 1280, 720, 81) == int(1.5 * GIB)
    assert costs.decode_host_bytes(1280, 704, 121) == int(3.7 * 121 * 3 * 704 * 1280 * 4)


def test_a_model_without_a_memory_model_is_named() -> None:
    with pytest.raises(KeyError, match="no memory model for 'mystery'; add it to costs.ARCHITECTURES"):
        costs.arch(replace(DEMO, key="mystery"))
    assert costs.arch(replace(T2V_A14B, key="t2v-a14b@high")) == costs.ARCHITECTURES["t2v-a14b"]


class _SequenceSeen(Exception):
    """Raised by the first block's hook once it has seen the sequence (the rest need not run)."""


def _sequence_of_the_s2v_transformer(width: int, height: int, motion: bool) -> tuple[int, int]:
    """(tokens entering the first block, noisy video tokens) of our S2V transformer (tiny width,
    the real token layout) for one 80-frame chunk at ``width``×``height``."""
    import torch

    from wan_studio.engine.s2v.config import TINY
    from wan_studio.engine.s2v.transformer import S2VTransformer

    torch.manual_seed(0)
    model = S2VTransformer(TINY).eval()
    seen: list[int] = []

    def stop(_module, args) -> None:  # noqa: ANN001
        seen.append(args[0].shape[1])
        raise _SequenceSeen

    model.blocks[0].register_forward_pre_hook(stop)
    h, w, f = height // 8, width // 8, 20
    c = TINY
    with torch.no_grad(), pytest.raises(_SequenceSeen):
        model(torch.zeros(1, c.in_dim, f, h, w), torch.tensor([900.0]), torch.zeros(1, 8, c.text_dim),
              torch.zeros(1, c.in_dim, 1, h, w), torch.zeros(1, c.in_dim, 19, h, w) if motion else None,
              torch.zeros(1, c.cond_dim, f, h, w), torch.zeros(1, c.audio_layers, c.audio_dim, 4 * f))
    return seen[0], f * (h // 2) * (w // 2)


@pytest.mark.parametrize("width, height", [(832, 480), (1024, 704)])
def test_s2v_tokens_are_those_its_transformer_attends_over(width: int, height: int) -> None:
    total, video = _sequence_of_the_s2v_transformer(width, height, motion=True)
    assert costs.tokens(S2V_14B, width, height, 80) == video
    assert costs.attended_tokens(S2V_14B, width, height, 80) == total
    first_chunk, _ = _sequence_of_the_s2v_transformer(width, height, motion=False)
    assert total > first_chunk > video  # the reference image always, the motion context after chunk 1
    assert costs.tokens(TI2V_5B, 1280, 704, 121) == costs.attended_tokens(TI2V_5B, 1280, 704, 121)


def test_s2v_forward_flops_count_the_context_and_the_audio_injectors() -> None:
    # 832×480: 31,200 video tokens, 1,560 reference, 2,314 motion (1,560 + 390 + 364)
    assert costs.context_tokens(S2V_14B, 832, 480) == 1_560 + 2_314
    assert costs.attended_tokens(S2V_14B, 1024, 704, 80) == 63_360  # bench/s2v_step.py's count there
    blocks = costs.flops_per_forward(S2V_14B, 31_200 + 3_874)
    inject = costs.audio_inject_flops(S2V_14B, 31_200, 20)
    assert costs.forward_flops(S2V_14B, 832, 480, 80) == blocks + inject
    assert inject == pytest.approx(12 * 4 * 31_200 * 5120**2, rel=0.01)  # q and o dominate
    assert costs.audio_inject_flops(T2V_A14B, 32_760, 21) == 0.0
    # the context is ~12 % of the tokens but ~20 % of the FLOPs (attention grows as n²)
    assert costs.forward_flops(S2V_14B, 832, 480, 80) / costs.flops_per_forward(S2V_14B, 31_200) > 1.2


def test_a_compiled_plan_predicts_the_recompile_of_a_new_shape_and_the_cost_line_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from wan_studio.memory.hardware import Hardware, gpu
    from wan_studio.memory.plan import Workload
    from wan_studio.memory.planner import choose
    from wan_studio.ui.advanced_form import time_text

    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    box = Hardware((gpu(0, 24, "NVIDIA H200", (9, 0)),), 128 * GIB, 128 * GIB)
    plan = choose(TI2V_5B, Workload(1280, 704, 121, 50, image=False), box)
    assert plan.phase_s["recompile_s"] == costs.RECOMPILE_NEW_SHAPE_S
    assert plan.compile_s_for(["recompile"]) == costs.RECOMPILE_NEW_SHAPE_S
    assert plan.compile_s_for(["compile", "recompile"]) == plan.phase_s["compile_s"] + costs.RECOMPILE_NEW_SHAPE_S
    assert plan.compile_s_for(["none"]) == 0.0
    assert "one that has run it only at another size 5 s recompiling" in time_text(plan)
    eager = choose(S2V_14B, Workload(832, 480, 80, 40), box)  # our S2V class is not compiled
    assert eager.phase_s["recompile_s"] == 0.0 and "recompiling" not in time_text(eager)


def test_a_cold_worker_compiles_beside_its_load_so_its_first_job_adds_the_longer_of_the_two(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # engine.warmup compiles the block on a throwaway while the weights load: the first job waits
    # for the longer of the two and its first step still runs WARMUP_FIRST_STEP_S over a step.
    from wan_studio.catalog.specs import get_spec
    from wan_studio.memory.hardware import Hardware, gpu
    from wan_studio.memory.plan import Workload
    from wan_studio.memory.planner import choose
    from wan_studio.ui.advanced_form import time_text

    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    box = Hardware((gpu(0, 24, "NVIDIA H200", (9, 0)),), 128 * GIB, 128 * GIB)
    for spec, work in ((TI2V_5B, Workload(1280, 704, 121, 50, image=False)),
                       (get_spec("t2v-a14b"), Workload(832, 480, 81, 40, image=False))):
        plan = choose(spec, work, box)
        ph = plan.phase_s
        more = ph["compile_s"] - costs.arch(spec).compile_first_s  # the second expert's, at its swap
        expected = max(ph["load_s"], costs.arch(spec).compile_first_s) + costs.WARMUP_FIRST_STEP_S + more
        assert plan.cold_extra_s == pytest.approx(expected, rel=1e-9)
        assert plan.cold_extra_s < ph["load_s"] + ph["compile_s"]
        assert plan.cold_job_s == pytest.approx(plan.warm_job_s + expected, rel=1e-9)
        assert f"at once ({_dur(plan.cold_extra_s)} in all)" in time_text(plan)
    # S2V-14B's folder is the official layout (its configuration comes with its weights): no warm-up
    s2v = choose(S2V_14B, Workload(832, 480, 80, 40), box)
    assert "compile_hidden_s" not in s2v.phase_s
    assert s2v.cold_extra_s == pytest.approx(s2v.phase_s["load_s"] + s2v.phase_s["compile_s"], rel=1e-9)


def _dur(seconds: float) -> str:
    from wan_studio.ui.advanced_form import _duration

    return _duration(seconds)
