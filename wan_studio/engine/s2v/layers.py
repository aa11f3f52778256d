"""Building blocks of the speech-to-video transformer (the Wan 14B block with two time segments).

Attribute names follow the released checkpoint (``self_attn.q``, ``norm3``, ``ffn.0``,
``modulation`` ...) so its state dict loads as is. The residual stream is kept in fp32 and each
linear layer runs in its weight dtype (bf16 on a GPU), as the released model does under autocast.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from wan_studio.engine.s2v.rope import apply_rotation


_FP8 = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """Dtype a layer computes in: its weight dtype, or bf16 when the weight is stored in fp8
    (diffusers' layerwise casting upcasts fp8 weights only inside the layer's own forward)."""
    return torch.bfloat16 if weight.dtype in _FP8 else weight.dtype


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (weights upcast too) whatever the dtypes; returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


def sinusoidal_embedding(dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """cos/sin embedding (len(timesteps), dim) of diffusion timesteps (0..1000), fp32."""
    half = dim // 2
    t = timesteps.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys; self- or cross-attention."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(self.o.weight)
        out = F.scaled_dot_product_attention(
            q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2), v.to(dtype).transpose(1, 2)
        )
        return self.o(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rotation: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``x`` (batch, tokens, dim) to ``context`` (self-attention when ``None``).

        ``rotation`` (tokens, head_dim/2) applies rotary positions to queries and keys.
        """
        dtype = compute_dtype(self.q.weight)
        x = x.to(dtype)
        src = x if context is None else context.to(dtype)
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(src)))
        v = self._heads(self.v(src))
        if rotation is not None:
            q, k = apply_rotation(q, rotation), apply_rotation(k, rotation)
        return self._attend(q, k, v)


def _by_segment(x: torch.Tensor, split: int, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn(part, segment)`` to tokens before and after ``split`` and join them again."""
    return torch.cat([fn(x[:, :split], 0), fn(x[:, split:], 1)], dim=1)


class S2VBlock(nn.Module):
    """One Wan transformer block whose modulation differs for two token segments.

    Tokens before ``split`` (the noisy video) are modulated by the step's timestep, the rest
    (reference image and motion context, which are clean) by timestep 0.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = FloatLayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads, eps)
        self.norm3 = FloatLayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = Attention(dim, num_heads, eps)
        self.norm2 = FloatLayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, split: int, rotation: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, tokens, dim) fp32; ``e`` (batch, 6, 2, dim) fp32 time projection."""
        mod = (self.modulation.float().unsqueeze(2) + e).unbind(1)  # 6 × (batch, 2, dim)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m.unsqueeze(2) for m in mod)  # (b, 2, 1, dim)

        def modulate(shift: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
            return lambda part, s: part * (1 + scale[:, s]) + shift[:, s]

        def gate(g: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
            return lambda part, s: part.float() * g[:, s]

        h = _by_segment(self.norm1(x).float(), split, modulate(shift1, scale1))
        x = x + _by_segment(self.self_attn(h, rotation=rotation), split, gate(gate1))
        x = x + self.cross_attn(self.norm3(x), context).float()
        h = _by_segment(self.norm2(x).float(), split, modulate(shift2, scale2))
        dtype = compute_dtype(self.ffn[0].weight)
        return x + _by_segment(self.ffn(h.to(dtype)), split, gate(gate2))


class Head(nn.Module):
    """Final norm, timestep modulation and projection back to patch pixels of the latent."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = FloatLayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, tokens, dim); ``e`` (batch, dim) fp32 time embedding."""
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        h = self.norm(x).float() * (1 + scale) + shift
        return self.head(h.to(compute_dtype(self.head.weight)))
