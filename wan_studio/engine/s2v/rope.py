"""3-axis rotary position embedding of the speech-to-video transformer.

Each head's channels are split in three groups rotated by the token's frame, row and column
position. Besides the video tokens (positions 0..F-1), the reference image sits at frame 30 and
the motion context at negative frames (the past), some of it at reduced resolution whose row and
column positions are spread over the full-resolution range. ``RopeSegment`` describes one such
block of tokens; ``segment_rotations`` turns a list of them into per-token rotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

THETA = 10000.0


@dataclass(frozen=True)
class RopeSegment:
    """A block of ``frames × rows × cols`` tokens in frame-row-column order.

    ``frame_start`` is the first frame position (negative for the past); ``spans`` are the
    (frames, rows, cols) of the full-resolution range the tokens are spread over.
    """

    frames: int
    rows: int
    cols: int
    frame_start: int
    spans: tuple[int, int, int]

    @property
    def length(self) -> int:
        """Number of tokens."""
        return self.frames * self.rows * self.cols

    @classmethod
    def dense(cls, frames: int, rows: int, cols: int, frame_start: int = 0) -> RopeSegment:
        """Tokens at consecutive positions starting at ``frame_start``, row 0 and column 0."""
        return cls(frames, rows, cols, frame_start, (frames, rows, cols))


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex channel pairs given to the frame, row and column axes of one head."""
    half = head_dim // 2
    side = half // 3
    return half - 2 * side, side, side


def _spread(start: int, span: int, count: int) -> np.ndarray:
    """``count`` integer positions spread over ``span`` positions from ``start``.

    Negative starts run backwards from ``|start|`` and are negated, so a block of the past keeps
    its farthest frame at ``start``; truncation toward zero matches the released model.
    """
    if start >= 0:
        return np.linspace(start, start + span - 1, count).astype(np.int64)
    return -np.linspace(-start, -start - span + 1, count).astype(np.int64)


def _axis_rotation(positions: np.ndarray, pairs: int) -> torch.Tensor:
    exponents = torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / (2 * pairs)
    inv_freq = 1.0 / THETA**exponents
    angles = torch.outer(torch.as_tensor(positions, dtype=torch.float64), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def segment_rotations(segments: list[RopeSegment], head_dim: int) -> torch.Tensor:
    """Complex rotations (tokens, head_dim/2) for the concatenation of ``segments``.

    Cached: every step of a chunk asks for the same layout.
    """
    return _rotations(tuple(segments), head_dim)


@lru_cache(maxsize=8)
def _rotations(segments: tuple[RopeSegment, ...], head_dim: int) -> torch.Tensor:
    pf, ph, pw = axis_pairs(head_dim)
    parts = []
    for s in segments:
        if s.length == 0:
            continue
        rf = _axis_rotation(_spread(s.frame_start, s.spans[0], s.frames), pf)
        rh = _axis_rotation(_spread(0, s.spans[1], s.rows), ph)
        rw = _axis_rotation(_spread(0, s.spans[2], s.cols), pw)
        grid = torch.cat([
            rf[:, None, None, :].expand(s.frames, s.rows, s.cols, pf),
            rh[None, :, None, :].expand(s.frames, s.rows, s.cols, ph),
            rw[None, None, :, :].expand(s.frames, s.rows, s.cols, pw),
        ], dim=-1)
        parts.append(grid.reshape(s.length, pf + ph + pw))
    if not parts:
        return torch.zeros(0, pf + ph + pw, dtype=torch.complex128)
    return torch.cat(parts)


def apply_rotation(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (batch, tokens, heads, head_dim) by ``rotation`` (tokens, head_dim/2); fp32 out."""
    b, n, h, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(b, n, h, d // 2, 2))
    out = torch.view_as_real(xc * rotation[None, :, None, :].to(torch.complex64))
    return out.reshape(b, n, h, d)
