"""LoRAs on one or both experts; step caches run, skip work and leave no trace afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.caches import MagRatios, expert_steps, magcache_calibration, plan_cache, ratios_from_capture, step_cache
from wan_studio.engine.lora import LoraChoice, list_loras, loras_applied
from wan_studio.engine.request import GenerationRequest, RequestError, validate


def make_lora(transformer, folder: Path, name: str, seed: int = 0) -> str:
    """A LoRA file for ``transformer`` with random (non-zero) up-projections."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from diffusers import WanPipeline

    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                            adapter_name="make")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in transformer.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    state = get_peft_model_state_dict(transformer, adapter_name="make")
    transformer.delete_adapters("make")
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=name)
    return name


def two_expert_pipe():
    from diffusers import WanPipeline
    from wan_studio.catalog.tiny import build_scheduler, build_text_encoder, build_tokenizer, build_transformer, build_wan21_vae

    tok = build_tokenizer()
    pipe = WanPipeline(tokenizer=tok, text_encoder=build_text_encoder(len(tok)), vae=build_wan21_vae(),
                       transformer=build_transformer(16, 16, seed=1), transformer_2=build_transformer(16, 16, seed=2),
                       scheduler=build_scheduler(12.0), boundary_ratio=0.875)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, steps: int = 3, size: int = 64) -> np.ndarray:
    return pipe("a lantern", height=size, width=size, num_frames=5, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0), output_type="np").frames[0]


@pytest.fixture
def loras(tmp_path: Path) -> Path:
    from wan_studio.catalog.tiny import build_transformer

    folder = tmp_path / "loras"
    make_lora(build_transformer(48, 48, seed=5), folder, "style.safetensors")
    other = build_transformer(48, 48, seed=5)
    other = type(other)(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=48,
                        out_channels=48, text_dim=32, freq_dim=64, ffn_dim=64, num_layers=2,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=256)
    make_lora(other, folder, "other-model.safetensors")
    return folder


def test_lora_changes_the_video_and_is_removed_afterwards(demo_pipe, loras: Path):
    spec = get_spec("demo")
    before = run(demo_pipe)
    assert list_loras(loras) == ["other-model.safetensors", "style.safetensors"]
    with loras_applied(demo_pipe, spec, [LoraChoice("style.safetensors", 1.0)], loras) as applied:
        styled = run(demo_pipe)
    assert applied == [{"file": "style.safetensors", "weight": 1.0, "layout": "diffusers"}]
    assert np.abs(styled - before).mean() > 1e-3
    np.testing.assert_allclose(run(demo_pipe), before, atol=1e-6)


def test_mismatched_lora_is_refused_and_leaves_the_model_clean(demo_pipe, loras: Path):
    before = run(demo_pipe)
    with pytest.raises(RequestError, match="other-model.safetensors does not fit"):
        with loras_applied(demo_pipe, get_spec("demo"), [LoraChoice("other-model.safetensors")], loras):
            pass
    np.testing.assert_allclose(run(demo_pipe), before, atol=1e-6)


@pytest.mark.parametrize("choice, words", [
    (LoraChoice("../secret.safetensors"), "file inside"),
    (LoraChoice("missing.safetensors"), "available: other-model"),
    (LoraChoice("style.safetensors", 9.0), "outside"),
])
def test_bad_lora_choices(demo_pipe, loras: Path, choice, words):
    with pytest.raises(RequestError, match=words):
        with loras_applied(demo_pipe, get_spec("demo"), [choice], loras):
            pass


def test_lora_weights_per_expert(tmp_path: Path):
    from wan_studio.catalog.tiny import build_transformer

    pipe = two_expert_pipe()
    folder = tmp_path / "loras"
    make_lora(build_transformer(16, 16, seed=9), folder, "motion.safetensors")
    spec = get_spec("t2v-a14b")
    base = run(pipe, steps=4)
    with loras_applied(pipe, spec, [LoraChoice("motion.safetensors", 1.0, 0.0)], folder) as applied:
        high_only = run(pipe, steps=4)
        scalings = {n: m.scaling for n, m in pipe.transformer_2.named_modules() if hasattr(m, "scaling") and m.scaling}
    with loras_applied(pipe, spec, [LoraChoice("motion.safetensors", 1.0, 1.0)], folder):
        both = run(pipe, steps=4)
    assert applied[0]["weight_2"] == 0.0
    assert not scalings, "a LoRA at strength 0 on the low-noise expert is not loaded there"
    assert np.abs(high_only - base).mean() > 1e-4 and np.abs(both - high_only).mean() > 1e-4


def count_block_work(pipe):
    calls = [0]
    pipe.transformer.blocks[-1].ffn.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("kind", ["first_block", "taylorseer"])
def test_each_cache_runs_skips_work_and_is_removed(kind):
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    calls = count_block_work(pipe)
    base = run(pipe, steps=12)
    full = calls[0]
    req = validate(GenerationRequest(prompt="x", model="demo", steps=12, seed=1))
    plan = plan_cache(pipe, req, kind, 0.3 if kind == "first_block" else None, MagRatios())
    calls[0] = 0
    with step_cache(pipe, plan):
        cached = run(pipe, steps=12)
    assert calls[0] < full  # steps were skipped
    assert np.isfinite(cached).all()
    calls[0] = 0
    np.testing.assert_allclose(run(pipe, steps=12), base, atol=1e-6)
    assert calls[0] == full


def test_magcache_uses_published_ratios_split_per_expert():
    pipe = two_expert_pipe()
    req = GenerationRequest(prompt="x", model="t2v-a14b", seed=1).resolved()
    plan = plan_cache(pipe, req, "mag", None, MagRatios())
    high, low = expert_steps(pipe, get_spec("t2v-a14b"), req)
    assert high + low == 40 and 0 < high < 40
    assert [c.num_inference_steps for c in plan.configs] == [high, low]
    assert "published" in plan.note
    calls = count_block_work(pipe)
    with step_cache(pipe, plan):
        out = run(pipe, steps=40)
    assert np.isfinite(out).all() and calls[0] < 2 * high  # the high-noise expert skipped steps


def test_magcache_refuses_models_without_ratios(demo_pipe):
    req = validate(GenerationRequest(prompt="x", model="demo", seed=1))
    with pytest.raises(RequestError, match="random weights"):
        plan_cache(demo_pipe, req, "mag", None, MagRatios())


def test_calibration_stores_ratios_that_magcache_then_uses(tmp_path: Path, monkeypatch):
    pipe = two_expert_pipe()
    req = GenerationRequest(prompt="x", model="t2v-a14b", seed=1, steps=10).resolved()
    store = MagRatios(tmp_path / "calibration")
    with magcache_calibration(pipe, req) as capture:
        run(pipe, steps=10)
    curve = ratios_from_capture(capture, experts=2)
    assert len(curve) == 10 and curve[0] == 1.0
    store.save("t2v-a14b", "text-to-video", curve, 10)
    ratios, source = store.lookup("t2v-a14b", "text-to-video")
    assert ratios == curve and "calibrated" in source
    assert "calibrated" in plan_cache(pipe, req, "mag", None, store).note
    with pytest.raises(RequestError, match="random weights"):
        with magcache_calibration(pipe, validate(GenerationRequest(prompt="x", model="demo", seed=1))):
            pass


def test_published_ratio_file_cites_its_source():
    data = json.loads((Path(__file__).resolve().parents[2] / "wan_studio/data/magcache_ratios.json").read_text())
    assert "MagCache" in data["source"] and "commit" in data["source"]
    assert set(data["ratios"]) == {"t2v-a14b/text-to-video", "ti2v-5b/text-to-video", "ti2v-5b/image-to-video",
                                   "i2v-a14b/image-to-video"}
