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
from typing import Any, Callable

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


def _float_frames(module: Any, run: Callable[[], Any]) -> np.ndarray:
    """The float frames a job hands to ``frames_to_uint8`` in ``module`` (before the 8-bit rounding
    that would hide a small change): ``run`` runs the job."""
    seen: list[np.ndarray] = []
    original = module.frames_to_uint8

    def keep(frames: Any) -> np.ndarray:
        seen.append(np.asarray(frames, dtype=np.float32).copy())
        return original(frames)

    module.frames_to_uint8 = keep
    try:
        run()
    finally:
        module.frames_to_uint8 = original
    return seen[-1]


def _job(model: str, pipe: Any, **fields: Any) -> np.ndarray:
    """A short job of ``model`` through the engine's render path (request defaults resolved as for
    a user: sampler, shift, guidance, negative prompt), 64×64, fixed seed."""
    from wan_studio.engine import generate as generate_module
    from wan_studio.engine.request import GenerationRequest

    request = GenerationRequest(prompt="a red fox running through snow", model=model, width=64, height=64,
                                num_frames=5, steps=3, seed=3, **fields).resolved()
    return _float_frames(generate_module, lambda: generate_module.render(pipe, request))


def ti2v_job() -> np.ndarray:
    """The tiny TI2V-5B pipeline (the demo model), text to video."""
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    return _job("demo", build_ti2v_pipeline(seed=0))


def a14b_job() -> np.ndarray:
    """The tiny T2V-A14B pipeline: both experts, the guidance pair and the MoE boundary."""
    from wan_studio.catalog.tiny import build_a14b_pipeline

    return _job("t2v-a14b", build_a14b_pipeline("t2v", seed=0))


def s2v_job() -> np.ndarray:
    """The tiny S2V pipeline: a portrait and 0.6 s of speech-like tone, one chunk, through the
    engine's speech-to-video job (audio features, reference, motion, decode)."""
    import tempfile

    from PIL import Image

    from wan_studio.engine.request import GenerationRequest
    from wan_studio.engine.s2v import runner
    from wan_studio.engine.s2v.audio_io import write_wav
    from wan_studio.engine.s2v.tiny import build_s2v_pipeline

    t = np.arange(int(0.6 * 16000)) / 16000
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), start=1))
    speech = (0.2 * voice * 0.5 * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        portrait = Path(d) / "portrait.png"
        x = np.linspace(0, 255, 64, dtype=np.uint8)
        Image.fromarray(np.stack([np.tile(x, (80, 1)), np.full((80, 64), 120, np.uint8),
                                  np.tile(x[::-1], (80, 1))], -1)).save(portrait)
        audio = write_wav(Path(d) / "speech.wav", speech)
        request = GenerationRequest(prompt="a person talking", model="s2v-14b", image=str(portrait),
                                    audio=str(audio), width=64, height=64, steps=2, seed=7).resolved()
        pipe = build_s2v_pipeline(seed=0)
        return _float_frames(runner, lambda: runner.generate_s2v(pipe, request, Path(d) / "out", chunk_frames=16))


CASES: dict[str, Callable[[], np.ndarray]] = {
    "s2v_first_chunk": s2v_first_chunk,
    "s2v_motion_chunk": s2v_motion_chunk,
    # Whole jobs: these move with any deliberate change of the sampler, its grid, the default
    # negative prompt or where the noise is drawn; re-record them with that change.
    "ti2v_job": ti2v_job,
    "a14b_job": a14b_job,
    "s2v_job": s2v_job,
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
