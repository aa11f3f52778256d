"""Single weight files (ComfyUI's ``.safetensors`` with the original Wan key names, city96's
``.gguf``): read their headers cheaply, check them, and turn them into diffusers / transformers
modules.

Headers are read without loading tensors, so a folder of 14B experts is scanned in milliseconds;
a truncated file or one for a different model is named before any loading starts. Loading goes
through diffusers' ``from_single_file`` (its own Wan transformer key conversion, GGUF through
``GGUFQuantizationConfig``); only what diffusers does not convert is mapped here from the key
names: the Wan2.2 VAE (residual blocks), ComfyUI's ``fp8_scaled`` weights (``weight × scale``) and
the UMT5 encoder (already in Transformers' names, minus the prefixes ComfyUI may add).
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FileKind = Literal["safetensors", "gguf"]

# ComfyUI's scaled fp8 files hold one fp32 scale per quantized weight, named after it; the
# ``scaled_fp8`` tensor only marks the file. Newer ComfyUI exports name the scale ``weight_scale``.
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
MARKER_KEYS = ("scaled_fp8",)
# Tensors that are not weights of the model (ComfyUI may embed the tokenizer of a text encoder).
NON_WEIGHT_KEYS = ("spiece_model",)
_DTYPE_NAMES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}

# Latent normalisation of the Wan2.2 VAE (48 channels), published with it (``vae2_2.py`` of
# Wan-Video/Wan2.2); the Wan2.1 VAE's 16 are diffusers' ``AutoencoderKLWan`` defaults.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744]


class DamagedFile(ValueError):
    """A weight file cannot be read as what it claims to be (truncated, not safetensors/GGUF)."""


@dataclass(frozen=True)
class FileInfo:
    """What a weight file holds, from its header: tensor shapes (original names), how its
    weights are stored, and its size in bytes (on disk and of the tensors once loaded as stored)."""

    path: Path
    kind: FileKind
    dtype: str                       # fp16, bf16, fp32, fp8_e4m3fn, fp8_scaled, or gguf
    shapes: dict[str, tuple[int, ...]]
    file_bytes: int
    tensor_bytes: int
    quant: str | None = None         # GGUF: the main quantisation of the weights, e.g. Q5_K

    @property
    def label(self) -> str:
        """``fp8_scaled``, ``GGUF Q5_K``."""
        return f"GGUF {self.quant}" if self.kind == "gguf" else self.dtype

    def shape(self, key: str) -> tuple[int, ...] | None:
        """Shape of ``key``, also when the file adds ComfyUI's ``model.diffusion_model.`` prefix."""
        return self.shapes.get(key) or self.shapes.get(f"model.diffusion_model.{key}")


def read_info(path: Path) -> FileInfo:
    """The header of a ``.safetensors`` or ``.gguf`` file; ``DamagedFile`` names a truncated or
    unreadable one."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return _gguf_info(path)
    return _safetensors_info(path)


def _safetensors_info(path: Path) -> FileInfo:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if 8 + header_len > size and header_len < 100_000_000:  # a plausible header, cut short
                raise DamagedFile(f"{path} is truncated ({size:,} bytes, shorter than its own header)")
            header = json.loads(f.read(header_len))
    except DamagedFile:
        raise
    except (struct.error, ValueError, UnicodeDecodeError, MemoryError):
        raise DamagedFile(f"{path} is damaged (unreadable safetensors header)") from None
    tensors = {k: t for k, t in header.items() if k != "__metadata__"}
    end = max((t["data_offsets"][1] for t in tensors.values()), default=0)
    if 8 + header_len + end > size:
        raise DamagedFile(f"{path} is truncated ({size:,} of {8 + header_len + end:,} bytes)")
    counts: dict[str, int] = {}
    for k, t in tensors.items():
        if k.endswith(".weight"):
            counts[t["dtype"]] = counts.get(t["dtype"], 0) + 1
    main = max(counts, key=lambda d: counts[d]) if counts else "F32"
    dtype = _DTYPE_NAMES.get(main, main.lower())
    if dtype.startswith("fp8") and any(k.endswith(SCALE_SUFFIXES) for k in tensors):
        dtype = "fp8_scaled"
    return FileInfo(path, "safetensors", dtype, {k: tuple(t["shape"]) for k, t in tensors.items()},
                    size, end)


def _gguf_info(path: Path) -> FileInfo:
    import gguf

    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = list(reader.tensors)
    except Exception as e:  # gguf raises ValueError, struct/numpy errors, IndexError on a cut file
        raise DamagedFile(f"{path} is damaged or truncated (not a readable GGUF file: {e})") from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in tensors), default=0)
    if end > size:
        raise DamagedFile(f"{path} is truncated ({size:,} of {end:,} bytes)")
    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
    counts: dict[str, int] = {}
    for t in tensors:
        if t.tensor_type not in plain:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + int(t.n_bytes)
    quant = max(counts, key=lambda q: counts[q]) if counts else "F16"
    named = re.search(r"(?i)(Q\d_K_[SML]|Q\d_K|Q\d_[01]|IQ\d_\w+)", path.name)
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in tensors}
    return FileInfo(path, "gguf", "gguf", shapes, size, sum(int(t.n_bytes) for t in tensors),
                    quant=named.group(1).upper() if named else quant)


# --- what a file is for -----------------------------------------------------------------------------
def transformer_channels(info: FileInfo) -> tuple[int, int] | None:
    """(width, input channels) of a Wan transformer file, None when it is not one."""
    shape = info.shape("patch_embedding.weight")
    if shape is None or len(shape) != 5 or info.shape("head.modulation") is None:
        return None
    return shape[0], shape[1]


def is_s2v_transformer(info: FileInfo) -> bool:
    """The speech-to-video transformer has an audio injector the others lack."""
    return any("audio_injector" in k or "casual_audio_encoder" in k for k in info.shapes)


def vae_latent_channels(info: FileInfo) -> int | None:
    """Latent channels of a Wan VAE file (48: Wan2.2, 16: Wan2.1), None when it is not one."""
    shape = info.shapes.get("conv1.weight")
    if shape is None or "decoder.middle.0.residual.0.gamma" not in info.shapes:
        return None
    return shape[0] // 2


def is_umt5(info: FileInfo) -> bool:
    """A UMT5 encoder: every block has its own relative attention bias (T5 has it in block 0 only)."""
    keys = {_strip_text_prefix(k) for k in info.shapes}
    embedding = "shared.weight" in keys or "encoder.embed_tokens.weight" in keys
    return embedding and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in keys


# --- reading weights ---------------------------------------------------------------------------------
def load_state_dict(path: Path, dtype: Any) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file in ``dtype``: ``fp8_scaled`` weights are multiplied
    by their scales (``weight = fp8 × scale``), plain fp8 is cast up, scales and markers dropped."""
    import torch
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        scales = {k[: -len(s)] + ".weight": k for k in keys for s in SCALE_SUFFIXES if k.endswith(s)}
        for k in keys:
            if k in MARKER_KEYS or k in NON_WEIGHT_KEYS or k in scales.values() or k.endswith(".scale_input"):
                continue
            t = f.get_tensor(k)
            if k in scales:
                t = t.to(torch.float32) * f.get_tensor(scales[k]).to(torch.float32)
            out[k] = t.to(dtype) if t.is_floating_point() else t
    return out


def _config_dir(config: dict[str, Any], class_name: str) -> str:
    """A folder holding ``config.json`` for ``from_single_file(config=...)`` (kept for the process)."""
    folder = Path(tempfile.mkdtemp(prefix="wan-studio-config-"))
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config}), encoding="utf-8")
    return str(folder)


def _check_loaded(module: Any, path: Path) -> None:
    """A weight left on the meta device means the file lacked it: say which file and key."""
    missing = [n for n, p in module.named_parameters() if p.device.type == "meta"]
    if missing:
        raise DamagedFile(f"{path} lacks {len(missing)} weights of this model (first: {missing[0]}); "
                          "it is for a different model or was cut short")


def load_transformer(info: FileInfo, config: dict[str, Any], dtype: Any) -> Any:
    """A ``WanTransformer3DModel`` from a single file: safetensors in any dtype (computing in
    ``dtype``), GGUF kept quantised and dequantised per layer in ``dtype``."""
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    cfg = _config_dir(config, "WanTransformer3DModel")
    if info.kind == "gguf":
        model = WanTransformer3DModel.from_single_file(
            str(info.path), config=cfg, torch_dtype=dtype,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))
    else:
        model = WanTransformer3DModel.from_single_file(load_state_dict(info.path, dtype), config=cfg,
                                                       torch_dtype=dtype)
    _check_loaded(model, info.path)
    return model.eval()


# Official Wan2.2 VAE names → diffusers' (residual down/up blocks). Each stage of the official
# encoder (``downsamples.i``) and decoder (``upsamples.i``) is a Sequential of residual blocks
# followed by one resampler, which is the only entry with ``resample`` / ``time_conv`` inside.
_RESBLOCK = ((".residual.0.gamma", ".norm1.gamma"), (".residual.2.", ".conv1."),
             (".residual.3.gamma", ".norm2.gamma"), (".residual.6.", ".conv2."), (".shortcut.", ".conv_shortcut."))
_MIDDLE = {"middle.0.": "mid_block.resnets.0.", "middle.1.": "mid_block.attentions.0.",
           "middle.2.": "mid_block.resnets.1."}
_TOP = {"encoder.conv1.": "encoder.conv_in.", "decoder.conv1.": "decoder.conv_in.",
        "encoder.head.0.": "encoder.norm_out.", "encoder.head.2.": "encoder.conv_out.",
        "decoder.head.0.": "decoder.norm_out.", "decoder.head.2.": "decoder.conv_out.",
        "conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
_STAGE = re.compile(r"^(encoder\.downsamples|decoder\.upsamples)\.(\d+)\.(downsamples|upsamples)\.(\d+)\.(.*)$")


def wan22_vae_key(key: str) -> str:
    """One key of the official Wan2.2 VAE in diffusers' ``AutoencoderKLWan(is_residual=True)``."""
    m = _STAGE.match(key)
    if m:
        side, stage, _, _index, rest = m.groups()
        block = "encoder.down_blocks" if side.startswith("encoder") else "decoder.up_blocks"
        if rest.startswith(("resample.", "time_conv.")):
            return f"{block}.{stage}.{'downsampler' if side.startswith('encoder') else 'upsampler'}.{rest}"
        return _resblock(f"{block}.{stage}.resnets.{_index}.{rest}")
    for part in ("encoder.", "decoder."):
        for old, new in _MIDDLE.items():
            if key.startswith(part + old):
                return _resblock(part + new + key[len(part + old):])
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _resblock(key: str) -> str:
    for old, new in _RESBLOCK:
        key = key.replace(old, new)
    return key


def wan22_vae_config(z_dim: int = 48) -> dict[str, Any]:
    """diffusers' config of the released Wan2.2 VAE (TI2V-5B)."""
    return dict(base_dim=160, decoder_base_dim=256, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)


def load_vae(info: FileInfo, config: dict[str, Any]) -> Any:
    """An ``AutoencoderKLWan`` in fp32 from a single file: the Wan2.1 VAE through diffusers'
    conversion, the Wan2.2 VAE through ``wan22_vae_key``."""
    import torch
    from diffusers import AutoencoderKLWan

    state = load_state_dict(info.path, torch.float32)
    if config.get("is_residual"):
        state = {wan22_vae_key(k): v for k, v in state.items()}
    model = AutoencoderKLWan.from_single_file(state, config=_config_dir(config, "AutoencoderKLWan"),
                                              torch_dtype=torch.float32)
    _check_loaded(model, info.path)
    return model.eval()


_TEXT_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.")


def _strip_text_prefix(key: str) -> str:
    for p in _TEXT_PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def load_umt5(info: FileInfo, config: dict[str, Any], dtype: Any) -> Any:
    """A Transformers ``UMT5EncoderModel`` from ComfyUI's single file (its keys are Transformers'
    own, sometimes behind a prefix; fp8_scaled weights are dequantised)."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    state = {_strip_text_prefix(k): v for k, v in load_state_dict(info.path, dtype).items()}
    # the embedding is tied: a file may hold it under either name
    state.setdefault("shared.weight", state.get("encoder.embed_tokens.weight"))
    state.setdefault("encoder.embed_tokens.weight", state.get("shared.weight"))
    state = {k: v for k, v in state.items() if v is not None}
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**config))
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise DamagedFile(f"{info.path} lacks {len(missing)} weights of the UMT5 encoder (first: {missing[0]}); "
                          "it is a different text encoder or was cut short")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, assign=True, strict=True)
    model.tie_weights()
    return model.eval()
