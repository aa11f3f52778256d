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


def test_compiled_blocks_give_the_same_video(demo_pipe):
    def run(pipe):
        return pipe("a harbour", height=64, width=64, num_frames=5, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    from wan_studio.catalog.tiny import build_ti2v_pipeline

    plain = run(demo_pipe)
    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    assert compile_transformers(pipe, backend="eager") == 1
    np.testing.assert_allclose(run(pipe), plain, atol=1e-5)
