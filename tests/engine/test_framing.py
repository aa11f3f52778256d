"""Start images are framed as the official code frames them, unless the user asks for a crop:
portrait photos stay portrait, the I2V-A14B frame keeps the whole image, and the sizes are the
ones the official formulas give (worked out by hand below)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.framing import best_output_size, fit_image, frame_of, i2v_area_size
from wan_studio.engine.request import GenerationRequest, RequestError, validate


def _photo(path: Path, width: int, height: int) -> Path:
    """A grey picture with a red border one twentieth of its size thick."""
    arr = np.full((height, width, 3), 128, np.uint8)
    bw, bh = max(1, width // 20), max(1, height // 20)
    arr[:bh], arr[-bh:], arr[:, :bw], arr[:, -bw:] = (220, 30, 30), (220, 30, 30), (220, 30, 30), (220, 30, 30)
    Image.fromarray(arr).save(path)
    return path


# (image w, h) -> frame within 1280×720 (I2V-A14B): lat = sqrt(area·aspect) // 8 // 2 · 2, × 8.
#   720×1280: sqrt(921600·16/9) = 1280 -> 160 latents -> 1280; sqrt(921600·9/16) = 720 -> 720
#   1000×1000: sqrt(921600) = 960 -> 960 × 960
#   600×800 within 832×480: sqrt(399360·4/3) = 729.7 -> 90 latents -> 720; sqrt(399360·3/4) = 547.3 -> 544
@pytest.mark.parametrize("image,area,frame", [
    ((720, 1280), (1280, 720), (720, 1280)),
    ((1600, 900), (1280, 720), (1280, 720)),
    ((1000, 1000), (1280, 720), (960, 960)),
    ((600, 800), (832, 480), (544, 720)),
])
def test_i2v_a14b_frame_follows_the_image_within_the_area(image, area, frame) -> None:
    assert i2v_area_size(*image, area[0] * area[1]) == frame


# TI2V-5B within 1280×704 in 32-px steps. 720×1280: width-first 704×1280 (aspect off 2.3 %),
# height-first 704×1248 (off 0.3 %) -> 704×1248. 1000×1000: sqrt(901120) = 949.3 -> 928 wide,
# 901120/928 = 971 -> 960 high; height first gives 960×928, equally far from square: a tie goes
# to the height-first size.
@pytest.mark.parametrize("image,frame", [
    ((720, 1280), (704, 1248)),
    ((1280, 720), (1248, 704)),
    ((1000, 1000), (960, 928)),
])
def test_ti2v_best_output_size(image, frame) -> None:
    w, h = best_output_size(*image, 32, 32, 1280 * 704)
    assert (w, h) == frame and w * h <= 1280 * 704


@pytest.mark.parametrize("model,size,chosen", [("i2v-a14b", (720, 1280), (1280, 720)),
                                               ("ti2v-5b", (720, 1280), (1280, 704))])
def test_a_portrait_photo_makes_a_portrait_video_by_default(tmp_path: Path, model, size, chosen) -> None:
    photo = _photo(tmp_path / "p.png", *size)
    r = validate(GenerationRequest(prompt="a dancer", model=model, image=str(photo),
                                   width=chosen[0], height=chosen[1]))
    w, h = frame_of(r)
    assert h > w
    cropped = validate(GenerationRequest(prompt="a dancer", model=model, image=str(photo), width=chosen[0],
                                         height=chosen[1], framing="crop"))
    assert frame_of(cropped) == chosen


def test_i2v_official_framing_keeps_the_whole_image_and_crop_cuts_it(tmp_path: Path) -> None:
    with Image.open(_photo(tmp_path / "p.png", 480, 832)) as im:
        whole = np.asarray(fit_image(im, "i2v", i2v_area_size(480, 832, 832 * 480), "official")).astype(int)
        crop = np.asarray(fit_image(im, "i2v", (832, 480), "crop")).astype(int)
    red = lambda a: (a[..., 0] > 180) & (a[..., 1] < 80)  # noqa: E731
    # The border survives on all four sides of the official frame; the crop loses top and bottom.
    assert red(whole[2]).mean() > 0.9 and red(whole[-3]).mean() > 0.9
    assert red(whole[:, 2]).mean() > 0.9 and red(whole[:, -3]).mean() > 0.9
    assert red(crop[2]).mean() < 0.2 and red(crop[-3]).mean() < 0.2


def test_square_image_on_the_demo_model_gives_a_square_video(demo_pipe, tmp_path: Path) -> None:
    from wan_studio.engine.generate import generate

    photo = _photo(tmp_path / "sq.png", 300, 300)
    r = validate(GenerationRequest(prompt="a box", model="demo", image=str(photo), width=320, height=192,
                                   num_frames=5, steps=2, seed=1))
    result = generate(demo_pipe, r, tmp_path)
    side = json.loads(result.sidecar_path.read_text())
    # 320×192 = 61440 px; sqrt = 247.9 -> 224 wide, 61440/224 = 274 -> 256 high, or height first
    # 224 high, 256 wide: a tie, which goes to height first.
    assert (side["video"]["width"], side["video"]["height"]) == (256, 224)
    assert side["request"]["framing"] is None


def test_unknown_framing_and_a_frame_outside_the_limits_are_refused(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "p.png", 400, 300)
    with pytest.raises(RequestError, match="unknown framing"):
        validate(GenerationRequest(prompt="x", model="i2v-a14b", image=str(photo), framing="stretch"))
    strip = _photo(tmp_path / "strip.png", 2000, 100)
    with pytest.raises(RequestError, match="crop"):
        validate(GenerationRequest(prompt="x", model="i2v-a14b", image=str(strip)))
    assert get_spec("i2v-a14b").max_side == 1920
