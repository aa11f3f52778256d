"""Tiny LoRA files in each published Wan key layout, with keys derived from a real transformer's modules."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

# diffusers module names → the original Wan names (wan/modules/model.py) the other layouts use.
TO_ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
               "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
               "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
               "ffn.net.2": "ffn.2"}
LAYOUTS = ("diffusers", "comfyui", "comfyui_peft", "kohya", "original")


def block_linears(transformer: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The transformer's block linear layers by diffusers name (``blocks.0.attn1.to_q``)."""
    return {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")}


def _original(name: str) -> str:
    _, index, rest = name.split(".", 2)
    return f"blocks.{index}.{TO_ORIGINAL[rest]}"


def lora_tensors(transformer: torch.nn.Module, layout: str, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rank-``rank`` factors for every block linear of ``transformer``, named as ``layout`` names them."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, m in block_linears(transformer).items():
        down = torch.randn(rank, m.in_features, generator=g)
        up = torch.randn(m.out_features, rank, generator=g) * 0.5
        original = _original(name)
        if layout == "diffusers":
            out[f"transformer.{name}.lora_A.weight"], out[f"transformer.{name}.lora_B.weight"] = down, up
            continue
        if layout == "comfyui_peft":
            out[f"diffusion_model.{original}.lora_A.weight"], out[f"diffusion_model.{original}.lora_B.weight"] = down, up
            continue
        key = {"comfyui": f"diffusion_model.{original}", "kohya": "lora_unet_" + original.replace(".", "_"),
               "original": original}[layout]
        out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down, up
        out[f"{key}.alpha"] = torch.tensor(float(rank))
    return out


def write_lora(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Save ``tensors`` as a safetensors file at ``path`` (folders made); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)
