"""The VAE decode is a phase of its own on the progress bar, with an ETA, not a bar stuck at 97 %."""

from __future__ import annotations

from pathlib import Path

import torch

from wan_studio.engine.decode import decode_pieces
from wan_studio.engine.generate import Progress, generate
from wan_studio.engine.request import GenerationRequest, validate


def _decoder_runs(vae, latents: torch.Tensor) -> int:
    calls = []
    handle = vae.decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.inference_mode():
            vae.decode(latents)
    finally:
        handle.remove()
    return len(calls)


def test_the_piece_count_matches_the_decoders_runs_tiled_or_not(demo_pipe) -> None:
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_config(demo_pipe.vae.config).eval()  # the demo's VAE, left as it is
    latents = torch.randn(1, vae.config.z_dim, 2, 4, 6)
    assert decode_pieces(vae, latents.shape) == _decoder_runs(vae, latents) == 2
    vae.enable_tiling(tile_sample_min_height=48, tile_sample_min_width=48, tile_sample_stride_height=32,
                      tile_sample_stride_width=32)
    assert decode_pieces(vae, latents.shape) == _decoder_runs(vae, latents) > 3


def test_decoding_reports_its_share_and_an_eta(demo_pipe, tmp_path: Path) -> None:
    seen: list[Progress] = []
    r = validate(GenerationRequest(prompt="a lantern", model="demo", width=64, height=64, num_frames=9, fps=8,
                                   steps=2, seed=3))
    generate(demo_pipe, r, tmp_path, on_progress=seen.append)
    decoding = [p for p in seen if p.stage == "decoding"]
    timed = [p for p in decoding if p.eta_s is not None]
    assert timed and timed[-1].decoded == 1.0 and timed[-1].eta_s == 0.0
    assert timed[0].message.startswith("decoding video ") and "s left" in timed[0].message
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions)  # the bar never goes back
    assert 0.95 <= min(p.fraction for p in decoding) and max(p.fraction for p in decoding) <= 0.99
