"""Audio side of the speech-to-video transformer: wav2vec2 features -> per-frame audio tokens,
and the cross-attention layers that inject them into selected transformer blocks.

Attribute names follow the released checkpoint (including its spelling ``casual_audio_encoder``
in ``transformer.py``) so the weights load as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import AdaLayerNorm
from torch import nn

from wan_studio.engine.s2v.layers import Attention, compute_dtype


class CausalConv1d(nn.Module):
    """1-D convolution that only looks back in time (left padding by repeating the first step)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.pad = kernel_size - 1
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, channels, time) -> (batch, out_channels, ceil(time / stride))."""
        return self.conv(F.pad(x, (self.pad, 0), mode="replicate"))


class AudioFrameEncoder(nn.Module):
    """Compresses audio features 4x in time into ``num_tokens`` local tokens per latent frame plus
    one learned padding token, and (for adaptive norm) one global token per latent frame."""

    def __init__(self, in_dim: int, hidden_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        quarter, half = hidden_dim // 4, hidden_dim // 2
        self.conv1_local = CausalConv1d(in_dim, quarter * num_tokens, 3)
        self.conv1_global = CausalConv1d(in_dim, quarter, 3)
        self.conv2 = CausalConv1d(quarter, half, 3, stride=2)
        self.conv3 = CausalConv1d(half, hidden_dim, 3, stride=2)
        self.final_linear = nn.Linear(hidden_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(quarter, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(half, elementwise_affine=False, eps=1e-6)
        self.norm3 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, hidden_dim))

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """norm1 -> conv2 -> norm2 -> conv3 -> norm3 on (rows, time, quarter); returns (rows, time/4, hidden)."""
        x = F.silu(self.norm1(x))
        x = F.silu(self.norm2(self.conv2(x.transpose(1, 2)).transpose(1, 2)))
        return F.silu(self.norm3(self.conv3(x.transpose(1, 2)).transpose(1, 2)))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` (batch, time, in_dim) -> global (b, t', 1, hidden), local (b, t', tokens + 1, hidden)."""
        b = feats.shape[0]
        x = feats.transpose(1, 2)  # (b, in_dim, time)
        local = self.conv1_local(x)  # (b, tokens * quarter, time)
        t = local.shape[-1]
        local = local.view(b, self.num_tokens, -1, t).permute(0, 1, 3, 2).reshape(b * self.num_tokens, t, -1)
        local = self._tail(local)
        local = local.view(b, self.num_tokens, local.shape[1], -1).permute(0, 2, 1, 3)
        pad = self.padding_tokens.expand(b, local.shape[1], 1, -1).to(local.dtype)
        local = torch.cat([local, pad], dim=2)
        glob = self._tail(self.conv1_global(x).transpose(1, 2))
        glob = self.final_linear(glob).unsqueeze(2)
        return glob, local


class CausalAudioEncoder(nn.Module):
    """Learned softmax-free weighting of all wav2vec2 hidden layers, then ``AudioFrameEncoder``."""

    def __init__(self, audio_dim: int, out_dim: int, num_layers: int, num_tokens: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.full((1, num_layers, 1, 1), 0.01))
        self.encoder = AudioFrameEncoder(audio_dim, out_dim, num_tokens)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` (batch, layers, audio_dim, frames) fp32 -> (global, local) tokens, see above."""
        w = F.silu(self.weights.float())
        mixed = (feats.float() * w).sum(dim=1) / w.sum(dim=1)  # (b, audio_dim, frames)
        dtype = compute_dtype(self.encoder.conv1_local.conv.weight)
        return self.encoder(mixed.transpose(1, 2).to(dtype))


class AudioInjector(nn.Module):
    """Per injected block: adaptive norm driven by the frame's global audio token, then
    cross-attention from that frame's video tokens to its audio tokens."""

    def __init__(self, dim: int, num_heads: int, inject_layers: tuple[int, ...], eps: float = 1e-6) -> None:
        super().__init__()
        self.block_to_slot = {block: slot for slot, block in enumerate(inject_layers)}
        self.injector = nn.ModuleList([Attention(dim, num_heads, eps) for _ in inject_layers])
        self.injector_adain_layers = nn.ModuleList(
            [AdaLayerNorm(embedding_dim=dim, output_dim=2 * dim, chunk_dim=1) for _ in inject_layers]
        )

    def forward(self, block: int, x: torch.Tensor, video_tokens: int, audio_local: torch.Tensor,
                audio_global: torch.Tensor) -> torch.Tensor:
        """Add the audio residual of ``block`` to the first ``video_tokens`` tokens of ``x``.

        ``audio_local`` (batch, frames, tokens, dim), ``audio_global`` (batch, frames, 1, dim);
        the video tokens are grouped by latent frame (frames must divide ``video_tokens``).
        """
        slot = self.block_to_slot.get(block)
        if slot is None:
            return x
        b, frames = audio_local.shape[:2]
        video = x[:, :video_tokens].reshape(b * frames, video_tokens // frames, -1)
        adain = self.injector_adain_layers[slot]
        dtype = compute_dtype(adain.linear.weight)
        normed = adain(video.to(dtype), temb=audio_global.reshape(b * frames, -1).to(dtype))
        ctx = audio_local.reshape(b * frames, audio_local.shape[2], -1)
        residual = self.injector[slot](normed, context=ctx).float()
        residual = residual.reshape(b, video_tokens, -1)
        return torch.cat([x[:, :video_tokens] + residual, x[:, video_tokens:]], dim=1)
