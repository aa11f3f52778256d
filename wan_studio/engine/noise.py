"""Where a job's initial noise comes from, so that a seed means the same video everywhere.

The official Wan2.2 code seeds a ``torch.Generator`` on the GPU it runs on and draws the noise
there (float32 for TI2V-5B and the A14B models, the weights' dtype — bf16 — for S2V). CUDA's
generator and the CPU's give different numbers for one seed, so Wan Studio draws on the GPU the
pipeline runs on, as the official code does, and on the CPU only where there is no GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class NoiseSource:
    """How the noise was drawn: ``device`` is ``cuda`` or ``cpu``, ``dtype`` a torch dtype name."""

    device: str
    dtype: str
    seed: int

    @property
    def matches_official_gpu(self) -> bool:
        """True when the official code on a GPU draws these same numbers for this seed."""
        return self.device == "cuda"

    def record(self) -> dict[str, Any]:
        """The sidecar's ``noise`` entry."""
        return {**asdict(self), "generator": f"torch.Generator('{self.device}').manual_seed({self.seed})",
                "matches_official_gpu": self.matches_official_gpu}


def noise_device(execution_device: torch.device | str) -> torch.device:
    """The device to seed a generator on: the pipeline's GPU, or the CPU without one."""
    device = torch.device(execution_device)
    return device if device.type == "cuda" else torch.device("cpu")


def seeded_generator(seed: int, execution_device: torch.device | str,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Generator, NoiseSource]:
    """A generator seeded with ``seed`` on the device the official code would use, and its record."""
    device = noise_device(execution_device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return generator, NoiseSource(device.type, str(dtype).removeprefix("torch."), int(seed))


def draw_noise(shape: tuple[int, ...], seed: int, execution_device: torch.device | str,
               dtype: torch.dtype) -> tuple[torch.Tensor, NoiseSource]:
    """Standard normal noise of ``shape`` drawn as the official code draws it, on ``execution_device``."""
    generator, source = seeded_generator(seed, execution_device, dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(execution_device), source
