"""Live preview: every denoising step, a small picture of what the video is becoming.

The current prediction of the clean video (the x0 estimate the sampler holds) is mapped from latent
channels to RGB by a fixed linear map per VAE family, at latent resolution, on the device the
latents live on; only the few-kilobyte result moves to the host, where it is written as a JPEG grid
of up to four frames into the job's work folder. No VAE decode, no model, a few MB of VRAM at most
(the frames picked, at latent size).

The maps are the published least-squares fits of RGB against Wan latents (the factor tables
ComfyUI ships for its Wan2.1 and Wan2.2 latent formats): 16 channels for the Wan2.1 VAE (A14B, S2V)
and 48 for the Wan2.2 VAE (TI2V-5B). They apply to the normalised latents the pipelines sample,
``(z - mean) / std``, and give RGB in about [-1, 1].
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

# Each step's picture is a new file, written once and never changed: a browser or client fetching
# one is never handed half of the next (a file replaced while it is sent breaks the response).
PREVIEW_NAME = re.compile(r"^preview-\d{6}\.jpg$")
KEEP = 5  # pictures kept: the newest and four before it, so a fetch of one just superseded still finds it
MAX_FRAMES = 4  # frames of the clip shown (first, last and evenly between): a 2×2 grid
FRAME_WIDTH = 320  # pixels a frame is scaled to (whole multiples of its latent width)


@dataclass(frozen=True)
class LatentRGB:
    """A linear map from ``len(factors)`` latent channels to RGB: ``rgb = Σ_c z_c · factors[c] + bias``.

    ``spatial`` is the VAE's spatial compression (pixels per latent, per side)."""

    family: str
    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float]
    spatial: int
    _on: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def channels(self) -> int:
        """Latent channels the map takes."""
        return len(self.factors)

    def tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The (3, C) weight and (3,) bias on ``device`` in ``dtype`` (made once per device/dtype)."""
        key = (str(device), dtype)
        if key not in self._on:
            weight = torch.tensor(self.factors, dtype=torch.float32).T.contiguous()
            self._on[key] = (weight.to(device, dtype), torch.tensor(self.bias, dtype=torch.float32).to(device, dtype))
        return self._on[key]


# Wan2.1 VAE (16 channels, 8× spatial): T2V/I2V-A14B and S2V-14B.
WAN21 = LatentRGB("wan2.1", (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
), (-0.1835, -0.0868, -0.3360), spatial=8)

# Wan2.2 VAE (48 channels, 16× spatial): TI2V-5B.
WAN22 = LatentRGB("wan2.2", (
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491), (-0.0813, -0.0677, 0.0607),
    (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912), (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025),
    (0.0443, -0.0102, 0.0288), (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637), (-0.0268, 0.0024, 0.0260),
    (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287), (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622),
    (-0.0086, -0.0374, -0.0051), (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447), (-0.0304, -0.0574, -0.0196),
    (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014), (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380),
    (0.0239, -0.0305, 0.0325), (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295), (-0.3441, -0.3543, -0.2008),
    (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800), (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927),
    (-0.0145, 0.0041, 0.0015), (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055),
), (0.0317, -0.0878, -0.1388), spatial=16)

MAPS = {m.channels: m for m in (WAN21, WAN22)}


def rgb_map_for(channels: int) -> LatentRGB:
    """The map for latents with ``channels`` channels (16: Wan2.1 VAE, 48: Wan2.2 VAE)."""
    try:
        return MAPS[channels]
    except KeyError:
        raise ValueError(f"no latent preview for {channels}-channel latents; Wan latents have "
                         f"{' or '.join(map(str, sorted(MAPS)))} channels") from None


def frame_indices(latent_frames: int, frames: int = MAX_FRAMES) -> list[int]:
    """Up to ``frames`` latent frame indices, first and last included, evenly spaced."""
    n = max(1, min(frames, latent_frames))
    return sorted({round(i * (latent_frames - 1) / max(n - 1, 1)) for i in range(n)})


def linear_rgb(latents: torch.Tensor, frames: int = MAX_FRAMES) -> torch.Tensor:
    """RGB (about [-1, 1]) of a few frames of ``latents`` (B, C, T, H, W) or (C, T, H, W), first sample.

    Computed where the latents are, at latent resolution, in float32 unless the latents are
    bf16/fp16 (then in their dtype); returns float32 (F, 3, H, W) on the host. The device holds the
    picked frames and their RGB only: F·C·H·W elements (2.7 MB for four TI2V-5B 720p frames)."""
    x = latents[0] if latents.ndim == 5 else latents
    if x.ndim != 4:
        raise ValueError(f"latents must be (B, C, T, H, W) or (C, T, H, W), not {tuple(latents.shape)}")
    rgb = rgb_map_for(int(x.shape[0]))
    dtype = x.dtype if x.dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
    idx = torch.tensor(frame_indices(int(x.shape[1]), frames), device=x.device)
    picked = x.index_select(1, idx).to(dtype)  # (C, F, H, W)
    weight, bias = rgb.tensors(x.device, dtype)
    out = torch.einsum("rc,cfhw->frhw", weight, picked) + bias.view(1, 3, 1, 1)
    return out.float().cpu()


def to_image(rgb: torch.Tensor, frame_width: int = FRAME_WIDTH) -> Image.Image:
    """One picture of (F, 3, H, W) RGB in [-1, 1]: frames in a grid (two columns from four frames),
    each scaled by a whole factor towards ``frame_width`` pixels."""
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    f, h, w, _ = pixels.shape
    cols = 2 if f == 4 else f
    rows = -(-f // cols)
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i in range(f):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = pixels[i]
    scale = max(1, min(16, frame_width // max(w, 1)))
    image = Image.fromarray(grid)
    return image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.BILINEAR)


def sampler_x0(scheduler: Any) -> torch.Tensor | None:
    """The sampler's latest prediction of the clean latents, when it keeps one: diffusers' UniPC
    (``predict_x0``, the official Wan sampler) and DPM-Solver++ store it as their last model
    output. None otherwise (Euler)."""
    outputs = getattr(scheduler, "model_outputs", None)
    config = getattr(scheduler, "config", None)
    keeps_x0 = bool(getattr(config, "predict_x0", False)) or "++" in str(getattr(config, "algorithm_type", ""))
    last = outputs[-1] if outputs and keeps_x0 else None
    return last if isinstance(last, torch.Tensor) else None


def x0_estimate(scheduler: Any, latents: torch.Tensor) -> torch.Tensor | None:
    """``sampler_x0`` when it belongs to ``latents`` (same shape), else None."""
    last = sampler_x0(scheduler)
    return last if last is not None and last.shape == latents.shape else None


def _euler_sigmas(scheduler: Any) -> tuple[float, float] | None:
    """(σ before, σ after) of the step a flow-matching Euler scheduler just took, else None."""
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is None or index is None or not 1 <= int(index) < len(sigmas):
        return None
    return float(sigmas[int(index) - 1]), float(sigmas[int(index)])


class LivePreview:
    """Writes a JPEG per step into ``folder`` (``preview-000001.jpg``, …; the newest ``KEEP`` stay)
    from the latents after each step; never raises into the job.

    ``offer(step, latents, scheduler)`` is called from the pipeline's step callback. A sampler that
    keeps its x0 prediction (UniPC, the official Wan sampler) is shown that; for a flow-matching Euler
    sampler (the fast recipes) the x0 estimate is formed from this step's and the previous step's
    projected latents (``x0 = x - σ·(x - x_prev)/(σ - σ_prev)``; the projection is linear), so no
    extra latent-sized tensor is kept; otherwise the current latents are shown.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path: Path | None = None  # the newest picture
        self.written = 0  # pictures written
        self.step = 0  # the step the picture shows
        self.source = ""  # "x0" (the sampler's prediction), "euler-x0" or "latents"
        self._previous: torch.Tensor | None = None
        self._failed = False

    def offer(self, step: int, latents: torch.Tensor, scheduler: Any = None) -> bool:
        """Write the preview of ``step`` (1-based); False when the preview is off after a failure."""
        if self._failed:
            return False
        try:
            self._write(step, self._rgb(latents, scheduler))
            return True
        except Exception as e:  # noqa: BLE001 - a preview must never stop a job
            self._failed = True
            log.warning("live preview turned off for %s: %s: %s", self.folder.name, type(e).__name__, e)
            return False

    def _rgb(self, latents: torch.Tensor, scheduler: Any) -> torch.Tensor:
        x0 = x0_estimate(scheduler, latents) if scheduler is not None else None
        if x0 is not None:
            self.source, self._previous = "x0", None
            return linear_rgb(x0)
        now = linear_rgb(latents)
        before, self._previous = self._previous, now
        sig = _euler_sigmas(scheduler) if scheduler is not None else None
        if before is not None and sig is not None and sig[1] != sig[0] and before.shape == now.shape:
            self.source = "euler-x0"
            return now - sig[1] * (now - before) / (sig[1] - sig[0])
        self.source = "latents"
        return now

    def _write(self, step: int, rgb: torch.Tensor) -> None:
        if self.written == 0:
            self.remove()  # an earlier attempt's pictures (a worker that died mid-job)
        self.folder.mkdir(parents=True, exist_ok=True)
        n = self.written + 1
        path = self.folder / f"preview-{n:06d}.jpg"
        tmp = self.folder / f".{path.name}.{os.getpid()}.tmp"
        # JPEG: 0.4 ms for a 640×352 grid where WebP takes 5–15 ms (this CPU; bench/preview_cost.py)
        to_image(rgb).save(tmp, format="JPEG", quality=85)
        os.replace(tmp, path)  # complete when it appears
        (self.folder / f"preview-{n - KEEP:06d}.jpg").unlink(missing_ok=True)
        self.written, self.step, self.path = n, step, path

    def new_window(self) -> None:
        """A long clip's next window (or an S2V chunk) starts from fresh noise: forget the last step."""
        self._previous = None

    def remove(self) -> None:
        """Delete the pictures (the job ended)."""
        for p in previews_in(self.folder):
            p.unlink(missing_ok=True)


def previews_in(folder: Path | str) -> list[Path]:
    """The preview pictures in a job's work ``folder``, oldest first."""
    try:
        return sorted(p for p in Path(folder).iterdir() if PREVIEW_NAME.match(p.name))
    except OSError:
        return []


def latest_preview(folder: Path | str) -> Path | None:
    """The newest preview picture in a job's work ``folder``, or None."""
    found = previews_in(folder)
    return found[-1] if found else None
