"""The decode that sends each decoded piece to host memory makes the frames the plain decode makes."""

from __future__ import annotations

import torch

from wan_studio.catalog.tiny import build_wan22_vae
from wan_studio.engine.decode import decoded_on_host


def _pieces(vae) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    vae.decoder.register_forward_hook(lambda _m, _i, out: seen.append(out))
    return seen


def _latents(frames: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(1, 48, frames, h, w, generator=torch.Generator().manual_seed(0))


def test_tiled_decode_on_host_gives_the_plain_frames_one_piece_per_tile_and_latent_frame() -> None:
    vae = build_wan22_vae(seed=0).eval()
    # latent 3 frames × 12 × 12 (192 px at the tiny VAE's 16× factor) in 128 px tiles, 96 px stride
    vae.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128,
                      tile_sample_stride_height=96, tile_sample_stride_width=96)
    z = _latents(3, 12, 12)
    with torch.inference_mode():
        plain = vae.decode(z).sample
        seen = _pieces(vae)
        with decoded_on_host(vae) as on:
            hosted = vae.decode(z).sample
    assert on
    assert torch.equal(hosted, plain)
    assert hosted.shape == (1, 3, 9, 192, 192)
    assert len(seen) == 4 * 3  # 2 × 2 tiles, each decoded one latent frame at a time
    assert all(p.device.type == "cpu" for p in seen)


def test_untiled_decode_on_host_gives_the_plain_frames_and_the_hook_is_removed() -> None:
    vae = build_wan22_vae(seed=1).eval()
    z = _latents(2, 4, 4)
    with torch.inference_mode():
        plain = vae.decode(z).sample
        with decoded_on_host(vae):
            hosted = vae.decode(z).sample
    assert torch.equal(hosted, plain)
    assert not vae.decoder._forward_hooks


def test_a_vae_without_a_decoder_is_left_alone() -> None:
    with decoded_on_host(object()) as on:
        assert on is False
