"""Recorded outputs ("goldens") of the tiny models with fixed seeds, and the code that makes them.

Each case returns a float32 array; ``sample`` keeps a strided 512 values of it plus its mean
absolute value, about 2 KB per case under ``tests/data/golden/``. The tests compare a fresh run
with the recording within fp32 noise, so a change of 0.1 % anywhere in the graph (a rope position,
a timestep, a mask) shows, where the behaviour tests would still pass.

Re-record after a deliberate change of the outputs: ``python scripts/record_golden.py`` (all) or
``python scripts/record_golden.py s2v_motion_chunk`` (one); see docs/TESTING.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
SAMPLES = 512
# fp32 noise across machines (BLAS kernels, thread counts) on outputs of magnitude ~0.5-1;
# the changes the goldens are there to catch move them by 3e-3 or more.
RTOL = 1e-4
ATOL = 1e-5


def sample(values: np.ndarray) -> np.ndarray:
    """``SAMPLES`` evenly strided values of ``values`` and, last, its mean absolute value."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    idx = np.linspace(0, flat.size - 1, min(SAMPLES, flat.size)).round().astype(np.int64)
    return np.concatenate([flat[idx], [np.abs(flat).mean(dtype=np.float64)]]).astype(np.float32)


def _s2v_inputs(seed: int = 0) -> list[torch.Tensor]:
    """Fixed inputs of one tiny S2V forward at 64×64 pixels, 4 latent frames, 19 motion latents."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 16, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 7, 32, generator=g),
            torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 16, 19, 8, 8, generator=g),
            torch.zeros(1, 16, 4, 8, 8), torch.randn(1, 3, 32, 16, generator=g)]


def _s2v_forward(motion: bool) -> np.ndarray:
    from wan_studio.engine.s2v.config import TINY
    from wan_studio.engine.s2v.transformer import S2VTransformer

    torch.manual_seed(0)
    model = S2VTransformer(TINY).eval()
    latents, t, context, ref, motion_latents, cond, audio = _s2v_inputs()
    with torch.no_grad():
        return model(latents, t, context, ref, motion_latents if motion else None, cond, audio).numpy()


def s2v_first_chunk() -> np.ndarray:
    """The tiny S2V transformer's prediction for a first chunk (reference image, no motion frames)."""
    return _s2v_forward(motion=False)


def s2v_motion_chunk() -> np.ndarray:
    """The same forward for a later chunk: the motion context of the previous chunk packed in."""
    return _s2v_forward(motion=True)


CASES: dict[str, Callable[[], np.ndarray]] = {
    "s2v_first_chunk": s2v_first_chunk,
    "s2v_motion_chunk": s2v_motion_chunk,
}


def path_of(name: str) -> Path:
    """Where the recording of case ``name`` lives."""
    return GOLDEN_DIR / f"{name}.npy"


def record(name: str) -> Path:
    """Run case ``name`` and write its recording; returns the file."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    path = path_of(name)
    np.save(path, sample(CASES[name]()))
    return path


def compare(name: str) -> None:
    """Run case ``name`` and assert it matches its recording within fp32 noise."""
    path = path_of(name)
    assert path.exists(), f"no recording {path}; run: python scripts/record_golden.py {name}"
    expected = np.load(path)
    got = sample(CASES[name]())
    assert got.shape == expected.shape, f"{name}: {got.shape} values against {expected.shape} recorded"
    worst = float(np.max(np.abs(got - expected) / (np.abs(expected) * RTOL + ATOL)))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=(
        f"{name} differs from its recording ({worst:.0f}x the fp32 tolerance). If the change is "
        f"deliberate, re-record: python scripts/record_golden.py {name}"))
