"""VRAM guard: before a job starts, compare what it needs with what the GPU can give it now.

The need is a plain number of bytes (the memory planner computes it); the GPU side comes from the
latest telemetry sample, so memory held by other programs (a game, another app) is seen. Memory
this app already holds counts as available, because the model manager can evict its own models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from wan_studio.gpu.telemetry import GpuSample

GIB = 2**30


@dataclass(frozen=True)
class VramCheck:
    """Outcome of one check, bytes throughout. ``message`` is written for the user."""

    gpu: str
    needed_bytes: int
    available_bytes: int
    others_bytes: int | None
    fits: bool
    message: str


def available_bytes(sample: GpuSample) -> tuple[int, int | None]:
    """(bytes a job of this app could use now, bytes other programs hold or ``None`` if unknown)."""
    total, used = sample.mem_total_bytes or 0, sample.mem_used_bytes or 0
    if sample.app_used_bytes is None:
        # Cannot tell ours from theirs: only what is free now is certain.
        free = sample.mem_free_bytes if sample.mem_free_bytes is not None else total - used
        return max(free, 0), None
    others = max(used - sample.app_used_bytes, 0)
    return max(total - others, 0), others


def check_vram(needed_bytes: int, samples: Sequence[GpuSample], index: int = 0,
               host: str | None = None) -> VramCheck | None:
    """Check a job needing ``needed_bytes`` on GPU ``index`` (of ``host``; any host when ``None``).

    Returns ``None`` when that GPU has no usable sample (no GPU, lost): nothing to warn about.
    """
    sample = next((s for s in samples if s.index == index and s.ok and (host is None or s.host == host)), None)
    if sample is None or sample.mem_total_bytes is None:
        return None
    avail, others = available_bytes(sample)
    fits = needed_bytes <= avail
    if fits:
        message = f"{sample.label}: needs about {needed_bytes / GIB:.1f} GiB, {avail / GIB:.1f} GiB available"
    else:
        who = (f"other programs hold {others / GIB:.1f} GiB of it" if others
               else f"only {avail / GIB:.1f} GiB is free")
        message = (
            f"This job needs about {needed_bytes / GIB:.1f} GiB on {sample.label} "
            f"({sample.name}, {sample.mem_total_bytes / GIB:.0f} GiB) but {who}; it may run out of memory. "
            "Close other GPU programs or choose a lighter preset."
        )
    return VramCheck(sample.label, needed_bytes, avail, others, fits, message)
