"""The random S2V folder of the benchmarks is the official release's layout: its original key names
convert back to ours with the loader's own converters, and sharded weights load unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import s2v_folder
from wan_studio.engine.s2v.checkpoint import load_transformer, umt5_xxl_config
from wan_studio.engine.s2v.config import TINY


def test_full_size_vae_and_text_encoder_names_are_the_originals_the_loader_converts() -> None:
    from diffusers import AutoencoderKLWan
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        vae = AutoencoderKLWan()  # what load_s2v_pipeline builds
        t5 = UMT5EncoderModel(umt5_xxl_config(s2v_folder.T5_VOCAB))
    names = s2v_folder.vae_to_official(list(vae.state_dict()))
    assert names["decoder.upsamples.4.shortcut.weight"] == "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
    assert names["decoder.upsamples.11.resample.1.weight"] == "decoder.up_blocks.2.upsamplers.0.resample.1.weight"
    assert names["conv2.weight"] == "post_quant_conv.weight"
    t5_names = s2v_folder.t5_to_official(list(t5.state_dict()))
    assert t5_names["blocks.23.ffn.gate.0.weight"] == "encoder.block.23.layer.1.DenseReluDense.wi_0.weight"
    assert "token_embedding.weight" in t5_names and len(t5_names) == 2 + 24 * 10
    with pytest.raises(ValueError, match="no original name"):
        s2v_folder.t5_to_official(["encoder.block.0.layer.9.weight"])


def test_transformer_split_into_shards_loads_unchanged(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s2v_folder, "SHARD_BYTES", 40_000)
    written = s2v_folder.write_transformer(tmp_path, TINY, "cpu", seed=1)
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and index["metadata"]["total_size"] == written
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "WanModel_S2V"
    model = load_transformer(tmp_path, dtype=torch.bfloat16)  # the loader's own check of keys and shapes
    state = model.state_dict()
    from safetensors.torch import load_file

    first = load_file(str(tmp_path / shards[0]))
    assert all(torch.equal(state[k], v) for k, v in first.items())
    assert sum(v.numel() * v.element_size() for v in state.values()) == written
