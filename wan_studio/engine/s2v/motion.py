"""Frame-pack motion context: the latents of the last 73 generated frames, packed into few tokens.

The nearest latent frame keeps full token resolution, the next two are merged 2x in time and
space, the 16 oldest 4x, so the context costs about a fifth of one chunk's tokens. Positions are
negative frames (the past); the coarse blocks spread their rows/columns over the full grid.
"""

from __future__ import annotations

import torch
from torch import nn

from wan_studio.engine.s2v.config import ZIP_FRAME_BUCKETS
from wan_studio.engine.s2v.layers import compute_dtype
from wan_studio.engine.s2v.rope import RopeSegment


class FramePackMotioner(nn.Module):
    """Turns motion latents (batch, channels, frames, h, w) into tokens and their rope segments."""

    def __init__(self, latent_channels: int, dim: int) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.proj = nn.Conv3d(latent_channels, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(latent_channels, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(latent_channels, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    @staticmethod
    def segments(h: int, w: int) -> list[RopeSegment]:
        """Rope segments of the packed tokens for a latent of ``h``×``w``, nearest block first."""
        near, mid, far = ZIP_FRAME_BUCKETS
        half = (h // 2, w // 2)
        return [
            RopeSegment(near, h // 2, w // 2, -near, (near, *half)),
            RopeSegment(mid // 2, h // 4, w // 4, -(near + mid), (mid, *half)),
            RopeSegment(far // 4, h // 8, w // 8, -(near + mid + far), (far, *half)),
        ]

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """Tokens (batch, n, dim) for ``motion`` (batch, channels, frames, h, w), newest frame last.

        Fewer than 19 frames are zero-padded at the old end; more are cut to the newest 19.
        """
        near, mid, far = ZIP_FRAME_BUCKETS
        total = near + mid + far
        b, c, t, h, w = motion.shape
        packed = motion.new_zeros(b, c, total, h, w)
        keep = min(t, total)
        if keep:
            packed[:, :, -keep:] = motion[:, :, -keep:]
        dtype = compute_dtype(self.proj.weight)
        oldest, middle, newest = packed.to(dtype).split([far, mid, near], dim=2)
        parts = [self.proj(newest), self.proj_2x(middle), self.proj_4x(oldest)]
        return torch.cat([p.flatten(2).transpose(1, 2) for p in parts], dim=1)
