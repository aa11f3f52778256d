"""The speech-to-video transformer has the released checkpoint's layout and loads it unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wan_studio.engine.s2v.checkpoint import CheckpointMismatch, convert_t5, load_transformer, umt5_xxl_config
from wan_studio.engine.s2v.config import FULL_14B, TINY
from wan_studio.engine.s2v.transformer import S2VTransformer

DATA = Path(__file__).parent.parent / "data"


def _layout(config) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = S2VTransformer(config)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,config", [("full", FULL_14B), ("tiny", TINY)])
def test_key_names_and_shapes_match_the_official_architecture(name: str, config) -> None:
    expected = json.loads((DATA / f"s2v_keys_{name}.json").read_text())["keys"]
    got = _layout(config)
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_full_size_has_the_released_tensor_count_and_parameters() -> None:
    layout = _layout(FULL_14B)
    assert len(layout) == 1260
    params = sum(torch.Size(s).numel() for s in layout.values())
    assert 16.2e9 < params < 16.4e9


def _official_folder(tmp_path: Path, model: S2VTransformer, prefix: str = "") -> Path:
    """Write ``model`` the way the release ships: config.json + two safetensors shards + index."""
    folder = tmp_path / "s2v"
    folder.mkdir()
    cfg = {"_class_name": "WanModel_S2V", "model_type": "s2v", "enable_adain": True, "enable_framepack": True,
           "enable_motioner": False, "zero_timestep": True, "adain_mode": "attn_norm", **TINY.to_dict()}
    (folder / "config.json").write_text(json.dumps(cfg))
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _run(model: S2VTransformer) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    args = dict(context=torch.randn(1, 7, 32, generator=g), ref_latents=torch.randn(1, 16, 1, 8, 8, generator=g),
                motion_latents=torch.randn(1, 16, 19, 8, 8, generator=g), cond_latents=torch.zeros(1, 16, 2, 8, 8),
                audio=torch.randn(1, 3, 32, 8, generator=g))
    with torch.no_grad():
        return model(torch.randn(1, 16, 2, 8, 8, generator=g), torch.tensor([700.0]), **args)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_sharded_official_folder_loads_and_computes_the_same(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(3)
    source = S2VTransformer(TINY).eval()
    loaded = load_transformer(_official_folder(tmp_path, source, prefix), dtype=torch.float32)
    assert torch.equal(_run(source), _run(loaded))


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    folder = _official_folder(tmp_path, S2VTransformer(TINY))
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shard = folder / index["weight_map"]["head.modulation"]
    from safetensors.torch import load_file

    state = load_file(str(shard))
    del state["head.modulation"]
    save_file(state, str(shard))
    with pytest.raises(CheckpointMismatch, match=r"1 missing \(e\.g\. head\.modulation\)"):
        load_transformer(folder, dtype=torch.float32)


def test_switch_this_implementation_does_not_compute_is_refused(tmp_path: Path) -> None:
    folder = _official_folder(tmp_path, S2VTransformer(TINY))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["enable_motioner"] = True
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="enable_motioner"):
        load_transformer(folder)


def test_original_text_encoder_keys_map_onto_umt5() -> None:
    from transformers import UMT5EncoderModel

    cfg = umt5_xxl_config(vocab_size=50)
    cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_layers, cfg.num_heads = 16, 4, 24, 2, 4
    # The original encoder file's names, from the official T5 encoder definition.
    original = {"token_embedding.weight": torch.randn(50, 16), "norm.weight": torch.randn(16)}
    for b in range(2):
        for name, shape in (("norm1.weight", (16,)), ("attn.q.weight", (16, 16)), ("attn.k.weight", (16, 16)),
                            ("attn.v.weight", (16, 16)), ("attn.o.weight", (16, 16)),
                            ("pos_embedding.embedding.weight", (32, 4)), ("norm2.weight", (16,)),
                            ("ffn.gate.0.weight", (24, 16)), ("ffn.fc1.weight", (24, 16)),
                            ("ffn.fc2.weight", (16, 24))):
            original[f"blocks.{b}.{name}"] = torch.randn(*shape)
    model = UMT5EncoderModel(cfg)
    model.load_state_dict(convert_t5(original), strict=True)
    assert torch.equal(model.encoder.block[1].layer[1].DenseReluDense.wi_0.weight, original["blocks.1.ffn.gate.0.weight"])
    with pytest.raises(CheckpointMismatch, match="unknown key"):
        convert_t5({"blocks.0.extra.weight": torch.zeros(1)})


def test_availability_names_the_missing_file_of_an_official_folder(tmp_path: Path) -> None:
    from wan_studio.catalog.loading import availability
    from wan_studio.catalog.specs import get_spec

    spec = get_spec("s2v-14b")
    folder = _official_folder(tmp_path, S2VTransformer(TINY))
    (folder / "Wan2.1_VAE.pth").write_bytes(b"0")
    (folder / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"0")
    (folder / "google" / "umt5-xxl").mkdir(parents=True)
    (folder / "google" / "umt5-xxl" / "spiece.model").write_bytes(b"0")
    wav = folder / "wav2vec2-large-xlsr-53-english"
    wav.mkdir()
    (wav / "config.json").write_text("{}")
    models = tmp_path / "models"
    models.mkdir()
    folder.rename(models / spec.folder)
    assert availability(spec, models).status == "incomplete"
    assert "preprocessor_config.json" in availability(spec, models).detail
    (models / spec.folder / wav.name / "preprocessor_config.json").write_text("{}")
    assert availability(spec, models).status == "ready"
