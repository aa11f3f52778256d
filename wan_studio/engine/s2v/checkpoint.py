"""Load the official ``Wan-AI/Wan2.2-S2V-14B`` folder into Wan Studio's speech-to-video pipeline.

The folder is not in Diffusers layout: the transformer is sharded safetensors with the original
key names (which ``S2VTransformer`` uses as is), the text encoder and VAE are the original ``.pth``
files, and wav2vec2 sits in its own Transformers folder. Keys are mapped here, so nobody renames
anything by hand; any key or shape that still does not fit is reported by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from wan_studio.engine.s2v.config import S2VConfig
from wan_studio.engine.s2v.transformer import S2VTransformer

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
WAV2VEC_DIR = "wav2vec2-large-xlsr-53-english"

# Prefixes added by some re-packs of the checkpoint (ComfyUI, single-file exports), and the
# corrected spelling some converters use for the audio encoder.
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
_RENAMES = (("causal_audio_encoder.", "casual_audio_encoder."),)


class CheckpointMismatch(ValueError):
    """The weights do not fit the architecture; the message names the first offending keys."""


def to_our_key(key: str) -> str:
    """Map one transformer key of the released checkpoint (or a common re-pack) to ours."""
    for p in _PREFIXES:
        if key.startswith(p):
            key = key[len(p):]
            break
    for old, new in _RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
    return key


def _shards(folder: Path) -> list[Path]:
    index = sorted(folder.glob("diffusion_pytorch_model*.safetensors.index.json"))
    if index:
        names = sorted(set(json.loads(index[0].read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / n for n in names]
    single = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not single:
        raise FileNotFoundError(f"no transformer weights (diffusion_pytorch_model*.safetensors) in {folder}")
    return single


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointMismatch`` naming missing, unexpected or wrongly shaped keys."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {want[k]}" for k in sorted(want)
              if k in state and tuple(state[k].shape) != want[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} with another shape (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointMismatch("the speech-to-video weights do not match the model: " + ", ".join(problems)
                                 + " — the download may be incomplete or of another model")


def load_transformer(folder: Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> S2VTransformer:
    """Build ``S2VTransformer`` from ``folder/config.json`` and its safetensors shards, in ``dtype``.

    The model is created on the meta device and the tensors are assigned, so the 32 GB of bf16
    weights are held once, not twice.
    """
    folder = Path(folder)
    config = S2VConfig.from_official(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    with torch.device("meta"):
        model = S2VTransformer(config)
    state: dict[str, torch.Tensor] = {}
    for shard in _shards(folder):
        for k, v in load_file(str(shard), device=device).items():
            state[to_our_key(k)] = v.to(dtype)
    check_state_dict(model, state)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


_T5_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_T5_PARTS = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def convert_t5(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original UMT5-XXL encoder keys -> ``transformers.UMT5EncoderModel`` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = value
            out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif (m := _T5_BLOCK.fullmatch(key)) and m.group(2) in _T5_PARTS:
            out[f"encoder.block.{m.group(1)}.{_T5_PARTS[m.group(2)]}"] = value
        else:
            raise CheckpointMismatch(f"unknown key {key!r} in the text encoder file {T5_FILE}")
    return out


def umt5_xxl_config(vocab_size: int = 256384) -> "UMT5Config":  # noqa: F821 - imported lazily
    """Configuration of the UMT5-XXL encoder Wan2.2 uses (4096 wide, 24 layers, 64 heads)."""
    from transformers import UMT5Config

    return UMT5Config(vocab_size=vocab_size, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_encoder_decoder=False)


def load_s2v_pipeline(folder: Path, dtype: torch.dtype = torch.bfloat16) -> "S2VPipeline":  # noqa: F821
    """The whole pipeline from an official ``Wan2.2-S2V-14B`` folder (transformer and text encoder
    in ``dtype``, VAE and wav2vec2 in fp32)."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    from transformers import AutoTokenizer, UMT5EncoderModel, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from wan_studio.catalog.tiny import build_scheduler
    from wan_studio.engine.s2v.pipeline import S2VPipeline

    folder = Path(folder)
    t5_state = convert_t5(torch.load(folder / T5_FILE, map_location="cpu", weights_only=True, mmap=True))
    with torch.device("meta"):
        text_encoder = UMT5EncoderModel(umt5_xxl_config(t5_state["shared.weight"].shape[0]))
    text_encoder.load_state_dict({k: v.to(dtype) for k, v in t5_state.items()}, assign=True, strict=True)
    text_encoder.tie_weights()
    vae = AutoencoderKLWan()
    vae_state = torch.load(folder / VAE_FILE, map_location="cpu", weights_only=True)
    vae.load_state_dict(convert_wan_vae_to_diffusers(vae_state), strict=True)
    pipe = S2VPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        transformer=load_transformer(folder, dtype),
        scheduler=build_scheduler(3.0),
        audio_encoder=Wav2Vec2Model.from_pretrained(folder / WAV2VEC_DIR).eval(),
        feature_extractor=Wav2Vec2FeatureExtractor.from_pretrained(folder / WAV2VEC_DIR),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
