"""Attention backend choice per GPU, its application to every expert, and compile of blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_studio.engine.accel import (
    apply_attention_backend,
    attention_error,
    choose_attention_backend,
    compile_transformers,
)


@pytest.fixture(autouse=True)
def restore_default_attention():
    """diffusers keeps the last backend set as a process-wide default: put PyTorch SDPA back."""
    yield
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)


def on_a_hopper_gpu_with_cudnn(monkeypatch) -> None:
    """This process sees an H200 (compute capability 9.0) with cuDNN attention that checks out."""
    import wan_studio.engine.accel as accel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(accel, "installed_backends", lambda: {"sdpa", "cudnn"})
    monkeypatch.setattr(accel, "attention_error", lambda *a, **k: 2.3e-3)


@pytest.mark.parametrize(
    "cc, installed, lossy, expected",
    [
        (None, {"sdpa", "cudnn"}, False, "sdpa"),
        ((9, 0), {"sdpa", "cudnn"}, False, "cudnn"),
        ((9, 0), {"sdpa", "cudnn", "flash3"}, False, "flash3"),
        ((8, 6), {"sdpa", "cudnn"}, False, "sdpa"),
        ((8, 6), {"sdpa", "cudnn", "xformers"}, False, "xformers"),
        ((8, 9), {"sdpa", "cudnn", "xformers", "sage"}, False, "xformers"),
        ((8, 6), {"sdpa", "cudnn", "xformers", "sage"}, True, "sage"),
        ((7, 5), {"sdpa", "cudnn", "xformers"}, False, "sdpa"),
    ],
)
def test_backend_follows_gpu_and_installed_packages(cc, installed, lossy, expected):
    choice = choose_attention_backend(cc, installed, allow_lossy=lossy)
    assert choice.backend == expected and choice.why


def test_backend_is_set_on_both_experts():
    from wan_studio.catalog.tiny import build_transformer

    class TwoExperts:
        transformer = build_transformer(16, 16, seed=0)
        transformer_2 = build_transformer(16, 16, seed=1)

    pipe = TwoExperts()
    apply_attention_backend(pipe, "sdpa")
    for model in (pipe.transformer, pipe.transformer_2):
        backends = {getattr(m.processor, "_attention_backend", None) for m in model.modules() if hasattr(m, "processor")}
        assert {str(getattr(b, "value", b)) for b in backends} == {"native"}


def test_missing_package_is_named_before_anything_changes(demo_pipe):
    with pytest.raises(ValueError, match="flash_attn_interface"):
        apply_attention_backend(demo_pipe, "flash3")


def test_native_attention_matches_exact_attention_on_cpu():
    assert attention_error("sdpa", device="cpu", tokens=256, heads=2, head_dim=32) < 2e-2


def test_compiled_blocks_give_the_same_video():
    def run(pipe):
        return pipe("a harbour", height=64, width=64, num_frames=5, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    from wan_studio.catalog.tiny import build_ti2v_pipeline

    # Two pipelines built alike (the session's shared one may carry the scheduler a job left on it).
    reference = build_ti2v_pipeline(seed=0)
    reference.set_progress_bar_config(disable=True)
    plain = run(reference)
    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    assert compile_transformers(pipe, backend="eager") == 1
    np.testing.assert_allclose(run(pipe), plain, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_cuda_speed_options_leave_the_pipeline_alone(demo_pipe):
    from wan_studio.engine.accel import apply_speed

    record = apply_speed(demo_pipe, {"resident"}, "bf16")
    assert record["attention"] == "sdpa" and record["compile"] is False and "no CUDA" in record["why"]
    assert demo_pipe.wan_speed is record


@pytest.mark.parametrize("modes, storage, option, compiled", [
    ({"resident"}, "bf16", "auto", True),
    ({"model_offload"}, "bf16", "auto", True),
    ({"group_offload"}, "bf16", "auto", True),
    ({"model_offload"}, "fp8", "auto", False),
    ({"group_offload"}, "fp8", "auto", False),
    ({"sequential"}, "bf16", "auto", False),
    ({"sequential"}, "bf16", "on", True),
    ({"resident"}, "bf16", "off", False),
])
def test_on_a_hopper_gpu_cudnn_is_set_checked_and_compile_follows_the_plan(monkeypatch, modes, storage, option,
                                                                          compiled):
    import wan_studio.engine.accel as accel
    from wan_studio.memory import costs
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline()
    pipe.transformer.to(torch.bfloat16)  # the real models compute in bf16
    on_a_hopper_gpu_with_cudnn(monkeypatch)
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    calls = []
    monkeypatch.setattr(accel, "compile_transformers", lambda p, offload: calls.append(offload) or 1)
    record = accel.apply_speed(pipe, modes, storage, accel.SpeedOptions(compile=option))
    assert record["attention"] == "cudnn" and "2.3e-03" in record["attention_check"]
    backends = {getattr(m.processor, "_attention_backend", None) for m in pipe.transformer.modules() if hasattr(m, "processor")}
    assert {getattr(b, "value", b) for b in backends} == {"_native_cudnn"}
    assert record["compile"] is compiled and bool(calls) is compiled
    assert record["gelu_epilogue"] is True  # every feed-forward GELU runs in its matmul's epilogue
    assert {type(b.ffn.net[0]).__name__ for b in pipe.transformer.blocks} == {"EpilogueGELU"}


def test_a_float32_model_on_a_hopper_gpu_keeps_sdpa_and_a_pinned_fused_kernel_is_refused(monkeypatch):
    # The built-in demo model runs in float32; cuDNN/flash have no float32 kernel, and choosing one
    # made every demo job on an H200 fail with "No available kernel".
    import wan_studio.engine.accel as accel
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline()
    assert next(pipe.transformer.parameters()).dtype == torch.float32
    on_a_hopper_gpu_with_cudnn(monkeypatch)
    record = accel.apply_speed(pipe, {"resident"}, "fp32")
    assert record["attention"] == "sdpa" and "float32" in record["attention_why"]
    with pytest.raises(ValueError, match="bf16 or fp16"):
        accel.apply_attention_backend(pipe, "cudnn")
    pipe.transformer.to(torch.bfloat16)
    accel.apply_attention_backend(pipe, "cudnn")  # accepted once the weights are bf16


def test_a_speech_to_video_job_on_a_hopper_gpu_keeps_pytorch_sdpa(monkeypatch):
    # The S2V transformer is our own module, not a diffusers model: choosing cuDNN for it made every
    # speech-to-video job on an H200 fail with "'S2VTransformer' object has no attribute
    # 'set_attention_backend'" while its plan was applied.
    import wan_studio.engine.accel as accel
    from wan_studio.engine.s2v.tiny import build_s2v_pipeline

    pipe = build_s2v_pipeline()
    pipe.transformer.to(torch.bfloat16)
    on_a_hopper_gpu_with_cudnn(monkeypatch)
    record = accel.apply_speed(pipe, {"group_offload"}, "bf16")
    assert record["attention"] == "sdpa" and "S2VTransformer" in record["attention_why"]
    assert record["compile"] is False  # no diffusers repeated blocks to compile
    with pytest.raises(ValueError, match="S2VTransformer.*pick 'sdpa'"):
        accel.apply_attention_backend(pipe, "cudnn")
    accel.apply_attention_backend(pipe, "sdpa")


def test_a_backend_that_fails_its_check_falls_back_to_sdpa(monkeypatch):
    import wan_studio.engine.accel as accel

    def broken(*a, **k):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(accel, "attention_error", broken)
    assert accel._checked_backend("xformers")[0] == "sdpa"
    monkeypatch.setattr(accel, "attention_error", lambda *a, **k: 0.3)
    backend, why = accel._checked_backend("flash")
    assert backend == "sdpa" and "differs" in why


def test_bf16_decode_is_close_to_fp32_and_leaves_the_vae_as_it_was(demo_pipe):
    from wan_studio.engine.accel import decode_precision

    def run():
        return demo_pipe("a harbour", height=64, width=64, num_frames=5, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    weights = {k: v.clone() for k, v in demo_pipe.vae.state_dict().items()}
    exact = run()
    with decode_precision(demo_pipe, "bf16") as changed:
        fast = run()
    assert changed and fast.dtype == exact.dtype
    assert not np.array_equal(fast, exact)  # the decode really ran in bf16
    psnr = 10 * np.log10(1.0 / np.mean((fast.astype(np.float64) - exact) ** 2))
    assert psnr > 30, psnr
    assert all(torch.equal(v, weights[k]) and v.dtype == torch.float32 for k, v in demo_pipe.vae.state_dict().items())
    np.testing.assert_array_equal(run(), exact)  # fp32 again afterwards, bit for bit
    with decode_precision(demo_pipe, "fp32") as changed:
        assert not changed


def test_a14b_720p_plan_compiles_its_streamed_experts_without_whole_graph_capture(monkeypatch):
    # The planner's 24 GB A14B 720p plan streams the experts block by block and swaps the text
    # encoder and VAE in whole: compile follows the experts' placement, not the text encoder's, and
    # leaves room for diffusers' offload hooks between the blocks.
    import wan_studio.engine.accel as accel
    from wan_studio.memory import costs
    from tests.memory.test_planner import A14B_720, box
    from wan_studio.catalog.specs import T2V_A14B
    from wan_studio.memory.planner import choose

    plan = choose(T2V_A14B, A14B_720, box(ram_gib=128))
    assert accel.transformer_offload(plan) == {"group_offload"} and "model_offload" in plan.offload_modes
    pipe = _bf16_tiny_pipe()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    monkeypatch.setattr(accel, "installed_backends", lambda: {"sdpa", "cudnn"})
    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    compiled = []
    # streamed blocks compile below their offload hooks, each block (the tiny model has 2)
    monkeypatch.setattr(accel, "compile_below_hooks", lambda block, **kw: compiled.append(kw))
    record = accel.apply_speed(pipe, accel.transformer_offload(plan), plan.storage)
    assert record["compile"] is True and compiled == [{"fullgraph": False}] * 2


def test_a_transformer_without_named_blocks_stays_eager():
    # Wan Studio's own speech-to-video transformer has no diffusers block list to compile.
    import wan_studio.engine.accel as accel

    class Plain(torch.nn.Module):
        pass

    class Pipe:
        transformer = Plain()

    assert accel.compile_transformers(Pipe(), "group") == 0


def _bf16_tiny_pipe():
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline()
    pipe.transformer.to(torch.bfloat16)
    return pipe


def test_fused_gelu_epilogue_keeps_weights_names_and_cpu_frames():
    # On the CPU (and for fp8 or LoRA-wrapped projections) the fused GELU falls back to diffusers'
    # own path: the same frames, the same state dict, one change per feed-forward.
    import wan_studio.engine.accel as accel
    from tests.memory.helpers import run_frames
    from wan_studio.catalog.specs import TI2V_5B
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline()
    reference = run_frames(pipe, TI2V_5B)
    keys = set(pipe.transformer.state_dict())
    assert accel.fuse_ffn_gelu(pipe) == len(pipe.transformer.blocks)
    assert accel.fuse_ffn_gelu(pipe) == 0  # already fused
    assert set(pipe.transformer.state_dict()) == keys
    np.testing.assert_array_equal(run_frames(pipe, TI2V_5B), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_fused_gelu_epilogue_matches_the_unfused_feed_forward():
    import copy

    import wan_studio.engine.accel as accel
    from diffusers.models.attention import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(512, inner_dim=2048, activation_fn="gelu-approximate").cuda().to(torch.bfloat16)
    fused = copy.deepcopy(ffn)
    assert accel.fuse_ffn_gelu(fused) == 1
    x = torch.randn(2, 4096, 512, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        ref, out = ffn(x).float(), fused(x).float()
    assert float((out - ref).norm() / ref.norm()) < 1e-2  # bf16 rounding of one intermediate
    with torch.inference_mode():  # the projection's own forward is not called: the epilogue ran
        calls = []
        handle = fused.net[0].proj.register_forward_hook(lambda *a: calls.append(1))
        fused(x)
        handle.remove()
    assert calls == []
