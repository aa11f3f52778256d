"""The speech-to-video transformer: audio drives it, positions follow the released layout, and it
runs with fp8 weight storage (diffusers layerwise casting) for 24 GB cards."""

from __future__ import annotations

import numpy as np
import torch

from wan_studio.engine.s2v.config import TINY
from wan_studio.engine.s2v.motion import FramePackMotioner
from wan_studio.engine.s2v.rope import _spread
from wan_studio.engine.s2v.transformer import S2VTransformer


def _args(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 16, 4, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 7, 32, generator=g),
            torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 16, 19, 8, 8, generator=g),
            torch.zeros(1, 16, 4, 8, 8), torch.randn(1, 3, 32, 16, generator=g)]


def _model() -> S2VTransformer:
    torch.manual_seed(0)
    return S2VTransformer(TINY).eval()


@torch.no_grad()
def test_audio_changes_the_prediction_and_silence_differs_from_speech() -> None:
    model, args = _model(), _args()
    speech = model(*args)
    silent = model(*args[:-1], torch.zeros_like(args[-1]))
    assert speech.shape == (1, 16, 4, 8, 8)
    assert (speech - silent).abs().mean() > 1e-3


def test_motion_context_positions_are_in_the_past() -> None:
    near, mid, far = FramePackMotioner.segments(60, 104)
    # Released layout: nearest latent at frame -1, the 2x block at -3, the 4x block spread over -19..-4.
    assert (near.frame_start, mid.frame_start, far.frame_start) == (-1, -3, -19)
    assert _spread(far.frame_start, far.spans[0], far.frames).tolist() == [-19, -14, -9, -4]
    assert (far.rows, far.cols) == (7, 13) and _spread(0, far.spans[1], far.rows).tolist()[-1] == 29


@torch.no_grad()
def test_fp8_weight_storage_stays_close_to_fp32() -> None:
    from diffusers.hooks import apply_layerwise_casting

    model, args = _model(), _args()
    reference = model(*args)
    model.to(torch.bfloat16)
    apply_layerwise_casting(model, storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16,
                            skip_modules_pattern=("norm", "patch_embedding", "head"))
    assert model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn and model.dtype == torch.bfloat16
    out = model(*args)
    rel = ((out - reference).abs().mean() / reference.abs().mean()).item()
    assert np.isfinite(rel) and rel < 0.05
