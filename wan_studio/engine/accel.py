"""Speed knobs that keep the maths: the attention kernel and torch.compile of repeated blocks.

The attention backend is chosen per GPU generation and installed packages, then applied through
diffusers' ``set_attention_backend`` on every transformer of a pipeline (both A14B experts).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["cudnn", "flash", "flash3", "sage", "xformers", "sdpa"]

# Our names -> diffusers' attention backend names. "sdpa" lets PyTorch pick (FlashAttention-2 on
# recent GPUs); "cudnn" forces PyTorch's cuDNN fused attention.
DIFFUSERS_BACKEND: dict[Backend, str] = {
    "cudnn": "_native_cudnn",
    "flash": "flash",
    "flash3": "_flash_3",
    "sage": "sage",
    "xformers": "xformers",
    "sdpa": "native",
}
# Python packages each backend needs beyond PyTorch.
BACKEND_PACKAGE: dict[Backend, str | None] = {
    "cudnn": None,
    "flash": "flash_attn",
    "flash3": "flash_attn_interface",
    "sage": "sageattention",
    "xformers": "xformers",
    "sdpa": None,
}
# Backends that change the numbers beyond bf16 rounding: offered, never chosen silently.
LOSSY: frozenset[Backend] = frozenset({"sage"})


@dataclass(frozen=True)
class AttentionChoice:
    """The backend to use and a one-sentence reason."""

    backend: Backend
    why: str


def installed_backends() -> set[Backend]:
    """Backends whose packages are importable here (cudnn and sdpa come with PyTorch)."""
    found: set[Backend] = set()
    for backend, package in BACKEND_PACKAGE.items():
        if package is None or importlib.util.find_spec(package) is not None:
            found.add(backend)
    return found


def choose_attention_backend(
    compute_capability: tuple[int, int] | None,
    installed: set[Backend] | None = None,
    allow_lossy: bool = False,
) -> AttentionChoice:
    """Pick the fastest exact attention kernel for a GPU of ``compute_capability`` (None: no GPU).

    Hopper gets cuDNN's fused kernel (FlashAttention-3 if installed): measured at Wan shapes on an
    H200, 551–556 TFLOP/s, against 357–365 for the FlashAttention-2 path older PyTorch releases
    took by default (torch 2.11's default already lands on cuDNN; forcing it keeps that choice on
    every release). On Ampere/Ada (RTX 3090/4090) SageAttention (when installed and allowed: it
    quantizes Q/K to int8) or xformers, else PyTorch's SDPA.
    """
    have = installed_backends() if installed is None else set(installed)
    if compute_capability is None:
        return AttentionChoice("sdpa", "no CUDA GPU: PyTorch's scaled-dot-product attention on the CPU")
    major, _minor = compute_capability
    if major >= 9:
        if "flash3" in have:
            return AttentionChoice("flash3", "Hopper GPU with FlashAttention-3 installed")
        return AttentionChoice("cudnn", "Hopper GPU: cuDNN fused attention (~555 TFLOP/s at Wan shapes on an H200)")
    if major >= 8:
        if allow_lossy and "sage" in have:
            return AttentionChoice("sage", "Ampere/Ada GPU with SageAttention installed (int8 Q/K, small quality cost)")
        if "xformers" in have:
            return AttentionChoice("xformers", "Ampere/Ada GPU with xformers installed")
        return AttentionChoice("sdpa", "Ampere/Ada GPU: PyTorch's FlashAttention-2 path")
    return AttentionChoice("sdpa", "older GPU: PyTorch's scaled-dot-product attention")


def transformers_of(pipe: Any) -> list[Any]:
    """Every denoising transformer of a pipeline (one, or both experts of an A14B model)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def apply_attention_backend(pipe: Any, backend: Backend) -> None:
    """Route the attention of every transformer of ``pipe`` through ``backend``.

    Raises ``ValueError`` naming the missing package when the backend is not installed, before
    any module is changed.
    """
    package = BACKEND_PACKAGE[backend]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(f"attention backend '{backend}' needs the Python package '{package}'; install it or pick another")
    for model in transformers_of(pipe):
        model.set_attention_backend(DIFFUSERS_BACKEND[backend])


def attention_error(backend: Backend, device: str = "cuda", tokens: int = 4096, heads: int = 24,
                    head_dim: int = 128, seed: int = 0) -> float:
    """Relative error of ``backend`` against plain SDPA in fp32 on random bf16 inputs.

    bf16 rounding alone gives ~3e-3; a correct kernel stays well under 2e-2.
    """
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, generator=g, device=device, dtype=torch.bfloat16)
               for _ in range(3))
    ref = dispatch_attention_fn(q.float(), k.float(), v.float(), backend="_native_math")
    out = dispatch_attention_fn(q, k, v, backend=DIFFUSERS_BACKEND[backend]).float()
    return float((out - ref).norm() / ref.norm())


def compile_transformers(pipe: Any, offload: str = "resident", **compile_kwargs: Any) -> int:
    """``torch.compile`` the repeated blocks of every transformer; return how many models were compiled.

    Whole-graph capture is used only when the weights stay put: with block-group offload the
    offload hooks run between blocks, so the graph may break there.
    """
    fullgraph = offload in ("resident", "model")
    compile_kwargs.setdefault("fullgraph", fullgraph)
    models = transformers_of(pipe)
    for model in models:
        model.compile_repeated_blocks(**compile_kwargs)
    return len(models)
