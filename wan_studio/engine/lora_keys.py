"""The key layouts LoRA files for Wan are published in, and the one step diffusers does not take.

diffusers' ``WanLoraLoaderMixin.lora_state_dict`` (0.42) already converts three of them to its own
``transformer.blocks.N.attn1.to_q.lora_A`` form, and Wan Studio uses that conversion as it is:

- ``diffusers``: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (peft, as diffusers saves it);
- ``comfyui``: ``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` + ``.alpha`` (ComfyUI,
  Kijai's WanVideo_comfy repackages, lightx2v's Wan2.2-Distill-Loras), also with ``lora_A``/``lora_B``;
- ``kohya``: ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` + ``.alpha`` (musubi-tuner, kohya).

The fourth, ``original``, is the original Wan module names with no prefix
(``blocks.0.self_attn.q.lora_down.weight``), which lightx2v's own loader also reads. No diffusers
converter picks it up (loading it fails with "Invalid LoRA checkpoint"), so it gets the
``diffusion_model.`` prefix here and then goes through the ComfyUI conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Layout = Literal["diffusers", "comfyui", "kohya", "original"]
# First names of the original Wan module tree (wan/modules/model.py): a key starting with one of
# these and carrying LoRA factors is the ``original`` layout.
_ORIGINAL_ROOTS = ("blocks.", "head.", "patch_embedding", "text_embedding.", "time_embedding.",
                   "time_projection.", "img_emb.")
_LORA_MARKS = ("lora_down", "lora_up", "lora_A", "lora_B", ".alpha", ".diff")


class LoraFormatError(ValueError):
    """The file holds no LoRA in a layout Wan Studio reads; the message says which layouts it reads."""


def layout_of(keys: list[str]) -> Layout:
    """Which published key layout ``keys`` (the tensor names of one file) follow."""
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(k.startswith("transformer.") for k in keys):
        return "diffusers"
    if any(k.startswith(_ORIGINAL_ROOTS) and any(m in k for m in _LORA_MARKS) for k in keys):
        return "original"
    raise LoraFormatError(
        "its tensor names follow none of the Wan LoRA layouts (diffusers 'transformer.blocks…', ComfyUI/lightx2v "
        f"'diffusion_model.blocks…', kohya 'lora_unet_blocks_…', original Wan 'blocks.N…'); first key: {keys[:1]}")


def read_for_diffusers(path: Path) -> tuple[dict[str, torch.Tensor], Layout]:
    """The tensors of a LoRA file, named so diffusers' Wan loader converts them, and their layout."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    layout = layout_of(list(state))
    if layout == "original":
        state = {f"diffusion_model.{k}": v for k, v in state.items()}
    return state, layout
