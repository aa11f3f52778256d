"""LoRA files in every published key layout load into the expert they are meant for and change the
video; a file made for another model is refused by name and leaves the pipeline clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.lora_files import LAYOUTS, lora_tensors, write_lora
from wan_studio.catalog.specs import get_spec
from wan_studio.catalog.tiny import build_a14b_pipeline, build_transformer
from wan_studio.engine.lora import LoraChoice, list_loras, loras_applied
from wan_studio.engine.lora_keys import layout_of
from wan_studio.engine.request import RequestError


@pytest.fixture(scope="module")
def pipe():
    p = build_a14b_pipeline("t2v")
    p.set_progress_bar_config(disable=True)
    return p


def run(pipe) -> np.ndarray:
    """Both experts' outputs on one fixed input (the whole pipeline's video is tested in test_fast.py)."""
    from wan_studio.catalog.tiny import TEXT_DIM

    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 8, TEXT_DIM, generator=g)
    with torch.no_grad():
        return np.stack([m(hidden_states=x, timestep=torch.tensor([900.0]), encoder_hidden_states=text,
                           return_dict=False)[0].numpy() for m in (pipe.transformer, pipe.transformer_2)])


def adapters(module) -> set[str]:
    return set(getattr(module, "peft_config", {}) or {})


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("expert", ["high", "low"])
def test_each_layout_loads_into_its_expert_only_and_changes_the_video(pipe, tmp_path: Path, layout: str, expert: str):
    target = pipe.transformer if expert == "high" else pipe.transformer_2
    write_lora(tmp_path / "sub" / f"{layout}.safetensors", lora_tensors(target, layout))
    base = run(pipe)
    weights = (1.0, 0.0) if expert == "high" else (0.0, 1.0)
    choice = LoraChoice(f"sub/{layout}.safetensors", *weights)
    with loras_applied(pipe, get_spec("t2v-a14b"), [choice], tmp_path) as applied:
        loaded_high, loaded_low = adapters(pipe.transformer), adapters(pipe.transformer_2)
        styled = run(pipe)
    assert bool(loaded_high) == (expert == "high") and bool(loaded_low) == (expert == "low")
    assert applied[0]["experts"] == [expert]
    assert applied[0]["layout"] == ("comfyui" if layout == "comfyui_peft" else layout)
    changed = [float(np.abs(styled[i] - base[i]).mean()) for i in (0, 1)]
    mine = 0 if expert == "high" else 1
    assert changed[mine] > 1e-3 and changed[1 - mine] == 0.0
    np.testing.assert_allclose(run(pipe), base, atol=1e-6)  # unloaded after the job


def test_layout_detection_names_each_published_layout(pipe):
    for layout in LAYOUTS:
        keys = list(lora_tensors(pipe.transformer, layout))
        assert layout_of(keys) == ("comfyui" if layout == "comfyui_peft" else layout)


def test_subfolder_files_are_listed_as_the_hub_lays_them_out(tmp_path: Path, pipe):
    write_lora(tmp_path / "Seko-V1.1" / "high_noise_model.safetensors", lora_tensors(pipe.transformer, "original"))
    assert list_loras(tmp_path) == ["Seko-V1.1/high_noise_model.safetensors"]


def test_a_lora_for_a_wider_model_is_refused_by_name(pipe, tmp_path: Path):
    wider = type(pipe.transformer)(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                   out_channels=16, text_dim=32, freq_dim=64, ffn_dim=64, num_layers=2,
                                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=256)
    write_lora(tmp_path / "ti2v-style.safetensors", lora_tensors(wider, "comfyui"))
    base = run(pipe)
    with pytest.raises(RequestError, match=r"ti2v-style.safetensors does not fit Wan2.2 T2V-A14B"):
        with loras_applied(pipe, get_spec("t2v-a14b"), [LoraChoice("ti2v-style.safetensors")], tmp_path):
            pass
    assert not adapters(pipe.transformer) and not adapters(pipe.transformer_2)
    np.testing.assert_allclose(run(pipe), base, atol=1e-6)


def test_a_lora_for_another_architecture_is_refused_by_name(pipe, tmp_path: Path):
    # An image-model LoRA (UNet key names): none of its layers exist in a Wan transformer.
    unet = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(32, 4),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}
    write_lora(tmp_path / "sdxl-style.safetensors", unet)
    with pytest.raises(RequestError, match=r"sdxl-style.safetensors does not fit"):
        with loras_applied(pipe, get_spec("t2v-a14b"), [LoraChoice("sdxl-style.safetensors")], tmp_path):
            pass
    write_lora(tmp_path / "not-a-lora.safetensors", {"weight": torch.randn(4, 4)})
    with pytest.raises(RequestError, match=r"not-a-lora.safetensors does not fit .* none of the Wan LoRA layouts"):
        with loras_applied(pipe, get_spec("t2v-a14b"), [LoraChoice("not-a-lora.safetensors")], tmp_path):
            pass
    assert not adapters(pipe.transformer) and not adapters(pipe.transformer_2)
