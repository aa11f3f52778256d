"""A random Wan2.2-S2V-14B folder in the official release's layout, for benchmarks through the worker.

What ``catalog.formats.OfficialS2VFolder`` and ``engine/s2v/checkpoint.py`` read, file for file:
``config.json`` and ``diffusion_pytorch_model-*.safetensors`` shards with their index (the
transformer, its released key names), ``models_t5_umt5-xxl-enc-bf16.pth`` (UMT5-XXL's original key
names), ``Wan2.1_VAE.pth`` (the original VAE's key names), ``wav2vec2-large-xlsr-53-english/`` (a
Transformers folder with its preprocessor config) and a tokenizer in ``google/umt5-xxl/``
(``catalog.tiny``'s byte-level one: offline, no download). Weights are random (N(0, 0.02), norms 1);
only memory and time mean anything.

Each part is built on ``device`` (a GPU at full size), written and freed before the next: the host
holds one transformer shard (``SHARD_BYTES``) or one ``.pth`` file's tensors at a time, never the
whole model. Full size: ~46 GB on disk (transformer 32.6 GB bf16, UMT5 11.4 GB bf16, wav2vec2 1.3 GB
and VAE 0.5 GB fp32). ``tiny``: the same files at ``S2VConfig.TINY`` width, on the CPU (tests; the
loader then needs ``bench/tiny_models.py`` for the UMT5 and VAE widths).

  python bench/s2v_folder.py /tmp/models/Wan2.2-S2V-14B          # full size, on the GPU
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_studio.engine.s2v.checkpoint import (T5_FILE, TOKENIZER_DIR, VAE_FILE, WAV2VEC_DIR,  # noqa: E402
                                              _T5_PARTS, convert_t5, umt5_xxl_config)

SHARD_BYTES = 5 * 10**9
T5_VOCAB = 256_384  # the released UMT5-XXL vocabulary (the byte-level tokenizer uses its first ids)
# wav2vec2-large-xlsr-53-english: 24 layers of 1024 (25 hidden states: S2VConfig.audio_layers).
WAV2VEC_FULL: dict[str, Any] = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, conv_dim=(512,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=True, feat_extract_norm="layer",
    do_stable_layer_norm=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, vocab_size=33)
# engine/s2v/tiny.py's wav2vec2 (hidden 32, 2 layers: TINY.audio_layers 3).
WAV2VEC_TINY: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
    do_stable_layer_norm=True, vocab_size=32)


def _fill(name: str, shape: torch.Size, dtype: torch.dtype, device: str, gen: torch.Generator) -> torch.Tensor:
    """A random tensor as ``catalog.synthetic.materialize`` fills one: norm scales 1, N(0, 0.02)."""
    if len(shape) == 1 and ("norm" in name or "scale" in name):
        return torch.ones(shape, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=gen)


def write_transformer(folder: Path, config: Any, device: str, seed: int = 0) -> int:
    """The transformer as the release ships it: safetensors shards of at most ``SHARD_BYTES``, their
    index, then ``config.json`` (written last: a folder with it is complete). Returns bytes written."""
    from safetensors.torch import save_file

    from wan_studio.catalog.synthetic import materialize
    from wan_studio.engine.s2v.transformer import S2VTransformer

    model = materialize(lambda: S2VTransformer(config), device, torch.bfloat16, seed)
    state = model.state_dict()
    groups: list[list[str]] = [[]]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += nbytes
    weight_map: dict[str, str] = {}
    total = 0
    for i, keys in enumerate(groups, start=1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(groups):05d}.safetensors"
        shard = {k: state[k].detach().to("cpu").contiguous() for k in keys}  # one shard in host memory
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map.update({k: name for k in keys})
        del shard
    del model, state
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    cfg = {"_class_name": "WanModel_S2V", "model_type": "s2v", "enable_adain": True, "enable_framepack": True,
           "enable_motioner": False, "zero_timestep": True, "adain_mode": "attn_norm", **config.to_dict()}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    return total


# --- UMT5: Transformers key names -> the original encoder file's ---------------------------------------
_T5_BACK = {ours: theirs for theirs, ours in _T5_PARTS.items()}
_T5_OURS = re.compile(r"encoder\.block\.(\d+)\.(.+)")


def t5_to_official(keys: list[str]) -> dict[str, str]:
    """``{original key: our key}`` for the keys of ``transformers.UMT5EncoderModel`` (the inverse of
    ``checkpoint.convert_t5``; the token embedding is stored once, as the original file does)."""
    out: dict[str, str] = {}
    for k in keys:
        if k == "shared.weight":
            out["token_embedding.weight"] = k
        elif k == "encoder.embed_tokens.weight":
            continue
        elif k == "encoder.final_layer_norm.weight":
            out["norm.weight"] = k
        elif (m := _T5_OURS.fullmatch(k)) and m.group(2) in _T5_BACK:
            out[f"blocks.{m.group(1)}.{_T5_BACK[m.group(2)]}"] = k
        else:
            raise ValueError(f"no original name for the text encoder key {k!r}")
    return out


def write_t5(path: Path, config: Any, device: str, seed: int = 0) -> int:
    """The UMT5 encoder in its original ``.pth`` layout, bf16, built tensor by tensor on ``device``."""
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UMT5EncoderModel(config).state_dict().items()}
    names = t5_to_official(list(shapes))
    mapped = set(convert_t5({k: torch.empty(0) for k in names}))
    if not set(shapes) <= mapped:  # what checkpoint.load_s2v_pipeline will ask of this file
        raise AssertionError(f"the text encoder file would lack {sorted(set(shapes) - mapped)[:3]}")
    gen = torch.Generator(device=device).manual_seed(seed + 2)
    state = {theirs: _fill(ours, shapes[ours], torch.bfloat16, device, gen).cpu() for theirs, ours in names.items()}
    torch.save(state, path)
    return sum(t.numel() * t.element_size() for t in state.values())


# --- the Wan2.1 VAE: diffusers key names -> the original file's -----------------------------------------
_RES_PARTS = (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
              ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))
_UPSAMPLER_AT = {0: 3, 1: 7, 2: 11}  # decoder up block -> its resample's index in the original list


def _resnet_part(rest: str) -> str:
    for ours, theirs in _RES_PARTS:
        if rest.startswith(ours):
            return theirs + rest[len(ours):]
    return rest


def _vae_key_to_official(k: str) -> str:
    side, _, rest = k.partition(".")
    if k.startswith(("quant_conv.", "post_quant_conv.")):
        return ("conv1." if k.startswith("quant_conv.") else "conv2.") + k.split(".", 1)[1]
    if side not in ("encoder", "decoder"):
        return k
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{side}.middle.{2 * int(m.group(1))}.{_resnet_part(m.group(2))}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{side}.middle.1.{m.group(1)}"
    for ours, theirs in (("norm_out.", "head.0."), ("conv_out.", "head.2."), ("conv_in.", "conv1.")):
        if rest.startswith(ours):
            return f"{side}.{theirs}{rest[len(ours):]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):
        return f"encoder.downsamples.{m.group(1)}.{_resnet_part(m.group(2))}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_resnet_part(m.group(3))}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"decoder.upsamples.{_UPSAMPLER_AT[int(m.group(1))]}.{m.group(2)}"
    return k


def vae_to_official(keys: list[str]) -> dict[str, str]:
    """``{original key: diffusers key}`` for an ``AutoencoderKLWan`` of the released structure,
    checked against the converter the loader uses (``convert_wan_vae_to_diffusers``)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    names = {_vae_key_to_official(k): k for k in keys}
    back = convert_wan_vae_to_diffusers({theirs: ours for theirs, ours in names.items()})
    wrong = sorted(k for k, v in back.items() if k != v) + sorted(set(keys) - set(back))
    if wrong or len(names) != len(keys):
        raise AssertionError(f"the VAE's original names do not convert back (e.g. {wrong[:3]})")
    return names


def write_vae(path: Path, config: dict[str, Any], device: str, seed: int = 0) -> int:
    """The Wan2.1 VAE in its original ``.pth`` layout, fp32 (``config``: {} for the released one)."""
    from diffusers import AutoencoderKLWan

    from wan_studio.catalog.synthetic import materialize

    vae = materialize(lambda: AutoencoderKLWan(**config), device, torch.float32, seed + 3)
    ours = vae.state_dict()
    state = {theirs: ours[k].cpu() for theirs, k in vae_to_official(list(ours)).items()}
    torch.save(state, path)
    return sum(t.numel() * t.element_size() for t in state.values())


def write_wav2vec(folder: Path, config: dict[str, Any], device: str, seed: int = 0) -> int:
    """wav2vec2 as a Transformers folder (safetensors, fp32) with its preprocessor config."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from wan_studio.catalog.synthetic import materialize

    model = materialize(lambda: Wav2Vec2Model(Wav2Vec2Config(**config)), device, torch.float32, seed + 4)
    model.to("cpu").save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def write_s2v_folder(folder: Path, tiny: bool = False, device: str | None = None, seed: int = 0) -> Path:
    """Write the whole folder (see the module docstring); returns it, checked by the app's own check."""
    from wan_studio.catalog import tiny as tiny_parts
    from wan_studio.catalog.loading import check_s2v_folder
    from wan_studio.engine.s2v.config import FULL_14B, TINY

    device = device or ("cpu" if tiny else "cuda")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_parts.build_tokenizer()
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    t5_config = tiny_parts.build_text_encoder(len(tokenizer)).config if tiny else umt5_xxl_config(T5_VOCAB)
    vae_config: dict[str, Any] = {}
    if tiny:
        from bench.tiny_models import TINY_VAE

        vae_config = TINY_VAE
    for what, write in (("wav2vec2", lambda: write_wav2vec(folder / WAV2VEC_DIR, WAV2VEC_TINY if tiny else WAV2VEC_FULL,
                                                            device, seed)),
                        ("VAE", lambda: write_vae(folder / VAE_FILE, vae_config, device, seed)),
                        ("text encoder", lambda: write_t5(folder / T5_FILE, t5_config, device, seed)),
                        ("transformer", lambda: write_transformer(folder, TINY if tiny else FULL_14B, device, seed))):
        t0 = time.perf_counter()
        n = write()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        took = time.perf_counter() - t0
        print(f"  {what}: {n / 1e9:.2f} GB in {took:.1f} s ({n / 1e9 / max(took, 1e-3):.2f} GB/s)", flush=True)
    check_s2v_folder(folder)
    return folder


if __name__ == "__main__":
    write_s2v_folder(Path(sys.argv[1]), tiny="--tiny" in sys.argv[2:])
