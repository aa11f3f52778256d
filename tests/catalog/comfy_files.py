"""Write the tiny random models as ComfyUI-style single files (tests only).

The names follow the released checkpoints (``blocks.N.self_attn.q``, ``encoder.downsamples...``)
that ComfyUI and city96's GGUF files use; the diffusers → original direction exists only here,
where the tests need files to read back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

# diffusers → released names of the transformer (the reverse of diffusers' own conversion).
_TRANSFORMER = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
)


def transformer_to_original(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers Wan transformer state dict under the released names (``prefix``: ComfyUI's
    ``model.diffusion_model.`` when wanted)."""
    out = {}
    for k, v in state.items():
        n = k
        for old, new in _TRANSFORMER:
            n = n.replace(old, new)
        if n == "scale_shift_table":
            n = "head.modulation"
        elif n.startswith("proj_out."):
            n = "head.head." + n[len("proj_out."):]
        n = n.replace(".scale_shift_table", ".modulation")
        # the cross-attention norm is norm3 in the release, norm2 in diffusers
        n = re.sub(r"\.norm2\.", ".norm3.", n) if ".norm2." in n else re.sub(r"\.norm3\.", ".norm2.", n)
        out[prefix + n] = v.contiguous()
    return out


_RES = ((".norm1.gamma", ".residual.0.gamma"), (".conv1.", ".residual.2."), (".norm2.gamma", ".residual.3.gamma"),
        (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut."))


def _res(key: str) -> str:
    for new, old in _RES:
        key = key.replace(new, old)
    return key


def wan22_vae_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Wan2.2 VAE (``is_residual``) state dict under the released names."""
    resnets: dict[str, int] = {}
    for k in state:
        m = re.match(r"^((?:encoder\.down|decoder\.up)_blocks\.\d+)\.resnets\.(\d+)\.", k)
        if m:
            resnets[m.group(1)] = max(resnets.get(m.group(1), 0), int(m.group(2)) + 1)
    out = {}
    for k, v in state.items():
        m = re.match(r"^(encoder\.down|decoder\.up)_blocks\.(\d+)\.(resnets\.(\d+)|downsampler|upsampler)\.(.*)$", k)
        if m:
            side, stage, what, idx, rest = m.groups()
            seq = "downsamples" if side.startswith("encoder") else "upsamples"
            index = idx if idx is not None else str(resnets[f"{side}_blocks.{stage}"])
            n = f"{side.split('.')[0]}.{seq}.{stage}.{seq}.{index}.{rest}"
            out[n if idx is None else _res(n)] = v
            continue
        out[_vae_common(k)] = v
    return out


def _vae_common(k: str) -> str:
    """Middle, head and quant-conv names, the same in both Wan VAEs."""
    n = k
    for part in ("encoder.", "decoder."):
        for new, old in (("mid_block.resnets.0.", "middle.0."), ("mid_block.attentions.0.", "middle.1."),
                         ("mid_block.resnets.1.", "middle.2.")):
            if n.startswith(part + new):
                n = _res(part + old + n[len(part + new):])
    for new, old in (("encoder.conv_in.", "encoder.conv1."), ("decoder.conv_in.", "decoder.conv1."),
                     ("encoder.norm_out.", "encoder.head.0."), ("encoder.conv_out.", "encoder.head.2."),
                     ("decoder.norm_out.", "decoder.head.0."), ("decoder.conv_out.", "decoder.head.2."),
                     ("post_quant_conv.", "conv2."), ("quant_conv.", "conv1.")):
        if n.startswith(new):
            n = old + n[len(new):]
    return n


def wan21_vae_to_original(state: dict[str, torch.Tensor], res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """A diffusers Wan2.1 VAE state dict under the released names: the encoder is one flat list
    there too; the decoder's stages are flattened, ``res_blocks + 1`` residual blocks and one
    resampler each."""
    per = res_blocks + 2
    out = {}
    for k, v in state.items():
        m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", k)
        if m:
            n = f"encoder.downsamples.{m.group(1)}.{m.group(2)}"
            out[n if ("resample." in n or "time_conv." in n) else _res(n)] = v
            continue
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)$", k)
        if m:
            stage, idx, rest = int(m.group(1)), m.group(3), m.group(4)
            index = stage * per + (int(idx) if idx is not None else per - 1)
            n = f"decoder.upsamples.{index}.{rest}"
            out[_res(n) if idx is not None else n] = v
            continue
        out[_vae_common(k)] = v
    return out


def umt5_to_comfy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI keeps Transformers' UMT5 names and drops the tied copy of the embedding."""
    return {k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}


def to_fp8_scaled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's fp8_scaled layout: every matrix as fp8 e4m3 divided by a per-tensor scale, the
    scale beside it as ``<name>.scale_weight``, and the ``scaled_fp8`` marker."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for k, v in state.items():
        if k.endswith(".weight") and v.dim() == 2:
            scale = v.float().abs().max().clamp(min=1e-12) / 448.0
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    return out


def save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    """``state`` as a safetensors file (floating tensors cast to ``dtype`` when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cast = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() and v.dtype.itemsize > 1 else v)
            for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in cast.items()}, str(path))
    return path


def save_gguf(state: dict[str, torch.Tensor], path: Path, quant: str = "Q8_0") -> Path:
    """``state`` as a GGUF file written by the ``gguf`` package: matrices whose rows split into
    quant blocks at ``quant``, everything else F32 (as city96's files keep norms and biases)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for k, v in state.items():
        a = v.float().numpy()
        if a.ndim == 2 and a.shape[-1] % block == 0:
            writer.add_tensor(k, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(k, np.ascontiguousarray(a, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def clean_config(config: Any) -> dict[str, Any]:
    """A diffusers / transformers config without its bookkeeping keys."""
    d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    return {k: v for k, v in d.items() if not k.startswith("_")}
