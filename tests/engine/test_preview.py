"""The live preview's latent → RGB projection: which map each VAE family gets, the picture's shape
and range, that it follows the latents, that it shows the sampler's x0 prediction (UniPC) or the
exact x0 of an Euler step, and that a preview that cannot be made never stops the job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wan_studio.catalog.tiny import build_scheduler
from wan_studio.engine.preview import (WAN21, WAN22, LivePreview, frame_indices, latest_preview, linear_rgb,
                                       rgb_map_for, to_image)
from wan_studio.engine.sampler import official_scheduler


def latents(channels: int, frames: int = 5, h: int = 6, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, channels, frames, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("channels", "family", "spatial"), [(16, "wan2.1", 8), (48, "wan2.2", 16)])
def test_each_vae_family_has_its_own_map(channels: int, family: str, spatial: int) -> None:
    rgb = rgb_map_for(channels)
    assert (rgb.family, rgb.channels, rgb.spatial) == (family, channels, spatial)
    assert all(len(row) == 3 for row in rgb.factors) and len(rgb.bias) == 3


def test_latents_of_another_channel_count_are_refused_in_words() -> None:
    with pytest.raises(ValueError, match="no latent preview for 36-channel latents; Wan latents have 16 or 48"):
        linear_rgb(latents(36))


def test_four_frames_first_to_last_make_a_two_by_two_grid_of_latent_sized_frames() -> None:
    assert frame_indices(31) == [0, 10, 20, 30] and frame_indices(2) == [0, 1] and frame_indices(1) == [0]
    rgb = linear_rgb(latents(48, frames=31, h=44, w=80))  # TI2V-5B 1280×704×121
    assert rgb.shape == (4, 3, 44, 80) and rgb.dtype == torch.float32 and rgb.device.type == "cpu"
    image = to_image(rgb)
    assert image.mode == "RGB" and image.size == (2 * 80 * 4, 2 * 44 * 4)  # each frame ×4: 320 px wide


def test_the_picture_saturates_instead_of_wrapping() -> None:
    huge = torch.zeros(1, 16, 1, 4, 4)
    huge[:, 2] = 1e4  # channel 2 maps to +R +G +B
    pixels = np.asarray(to_image(linear_rgb(huge)))
    assert pixels.min() == 255
    assert np.asarray(to_image(linear_rgb(-huge))).max() == 0
    zero = np.asarray(to_image(linear_rgb(torch.zeros(1, 48, 1, 4, 4))))
    expected = [round((b + 1) * 127.5) for b in WAN22.bias]  # zero latents: the map's bias colour
    assert zero[0, 0].tolist() == expected


def test_the_picture_follows_the_latents() -> None:
    a, b = latents(16, seed=1), latents(16, seed=2)
    assert torch.equal(linear_rgb(a), linear_rgb(a.clone()))
    assert not torch.allclose(linear_rgb(a), linear_rgb(b))
    # linear: half-way latents give the half-way picture
    assert torch.allclose(linear_rgb((a + b) / 2), (linear_rgb(a) + linear_rgb(b)) / 2, atol=1e-5)
    assert not np.array_equal(np.asarray(to_image(linear_rgb(a))), np.asarray(to_image(linear_rgb(b))))


def test_bf16_latents_are_projected_in_their_dtype_close_to_float32() -> None:
    x = latents(48)
    assert torch.allclose(linear_rgb(x.to(torch.bfloat16)), linear_rgb(x), atol=0.05)


def test_with_unipc_the_preview_shows_the_samplers_x0_prediction(tmp_path: Path) -> None:
    x = latents(48)
    sched = official_scheduler(build_scheduler(5.0), 5.0)
    sched.set_timesteps(4)
    after = sched.step(torch.randn_like(x), sched.timesteps[0], x, return_dict=False)[0]
    preview = LivePreview(tmp_path)
    assert preview.offer(1, after, sched) and preview.source == "x0"
    shown = np.asarray(Image.open(preview.path), dtype=np.float32)
    of_x0 = np.asarray(to_image(linear_rgb(sched.model_outputs[-1])), dtype=np.float32)
    of_latents = np.asarray(to_image(linear_rgb(after)), dtype=np.float32)
    assert np.abs(shown - of_x0).mean() < 3 < np.abs(shown - of_latents).mean()  # JPEG error only


def test_with_euler_the_preview_is_the_exact_x0_of_the_step_from_two_projections(tmp_path: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    x0, noise = latents(16, seed=3), latents(16, seed=4)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(4)
    preview = LivePreview(tmp_path)
    x = noise.clone()
    for i, t in enumerate(sched.timesteps[:2]):
        sigma = float(sched.sigmas[i])
        model_x0 = x0 if i else x0 * 0.5  # the model's guess may change between steps
        v = (x - model_x0) / sigma  # flow prediction that points at model_x0
        x = sched.step(v, t, x, return_dict=False)[0]
        preview.offer(i + 1, x, sched)
    assert preview.source == "euler-x0" and preview.written == 2
    shown = np.asarray(Image.open(preview.path), dtype=np.float32)
    assert np.abs(shown - np.asarray(to_image(linear_rgb(x0)), dtype=np.float32)).mean() < 3


def test_a_preview_that_cannot_be_made_turns_itself_off_without_raising(tmp_path: Path) -> None:
    preview = LivePreview(tmp_path / "off")
    assert preview.offer(1, latents(12), None) is False
    assert preview.offer(2, latents(16), None) is False  # stays off for the rest of the job
    assert latest_preview(preview.folder) is None and preview.written == 0


def test_each_step_is_a_new_file_the_newest_five_are_kept_and_removed_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "preview-000009.jpg").write_bytes(b"an earlier attempt's")
    preview = LivePreview(tmp_path)
    for step in range(1, 8):
        assert preview.offer(step, latents(16, seed=step), None) and preview.source == "latents"
        assert latest_preview(tmp_path) == preview.path == tmp_path / f"preview-{step:06d}.jpg"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"preview-{n:06d}.jpg" for n in (3, 4, 5, 6, 7)]  # no temp file
    assert Image.open(preview.path).format == "JPEG"
    preview.remove()
    assert list(tmp_path.iterdir()) == []


def test_the_map_is_unchanged_from_the_published_tables() -> None:
    # spot checks of the Wan2.1 / Wan2.2 factor tables (first, a middle and the last row, the bias)
    assert WAN21.factors[0] == (-0.1299, -0.1692, 0.2932) and WAN21.factors[15] == (0.1984, 0.0913, 0.1861)
    assert WAN21.bias == (-0.1835, -0.0868, -0.3360)
    assert WAN22.factors[0] == (0.0119, 0.0103, 0.0046) and WAN22.factors[39] == (-0.3441, -0.3543, -0.2008)
    assert WAN22.factors[47] == (-0.0837, 0.0168, 0.0055) and WAN22.bias == (0.0317, -0.0878, -0.1388)
