"""Every validation rule turns bad input into a specific RequestError."""

from __future__ import annotations

from pathlib import Path

import re

import pytest
from PIL import Image

from wan_studio.engine.request import GenerationRequest, RequestError, check_image, load_image, validate


def req(**kw) -> GenerationRequest:
    base = dict(prompt="a fox in snow", model="demo", seed=1)
    base.update(kw)
    return GenerationRequest(**base)


def test_defaults_come_from_the_model_spec():
    r = validate(GenerationRequest(prompt="x", model="ti2v-5b"))
    assert (r.width, r.height, r.num_frames, r.fps, r.steps, r.guidance, r.shift) == (1280, 704, 121, 24, 50, 5.0, 5.0)
    assert 0 <= r.seed < 2**32


def test_a14b_defaults_carry_both_guidance_values():
    r = validate(GenerationRequest(prompt="x", model="t2v-a14b"))
    assert (r.guidance, r.guidance_2, r.shift, r.steps, r.num_frames, r.fps) == (4.0, 3.0, 12.0, 40, 81, 16)


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="   \n"), "prompt is empty"),
        (dict(prompt="x" * 4001), "4001 characters"),
        (dict(negative_prompt="y" * 5000), "negative prompt"),
        (dict(model="nope"), "unknown model"),
        (dict(width=250), "multiple of 32"),
        (dict(height=100), "multiple of 32"),
        (dict(width=32), "outside"),
        (dict(width=1024), "outside"),
        (dict(model="ti2v-5b", width=1920, height=1920), "pixels"),
        (dict(model="t2v-a14b", width=840), "multiple of 16"),
        (dict(num_frames=18), "4k+1"),
        (dict(num_frames=1), "outside"),
        (dict(num_frames=401), "outside"),
        (dict(steps=0), "steps"),
        (dict(steps=500), "steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(shift=0.0), "shift"),
        (dict(fps=0), "fps"),
        (dict(seed=2**40), "seed"),
        (dict(width="wide"), "whole number"),
    ],
)
def test_bad_fields_are_refused_with_a_specific_message(fields, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        validate(req(**fields))


def test_suggests_the_nearest_valid_frame_counts():
    with pytest.raises(RequestError, match="try 17 or 21"):
        validate(req(num_frames=19))


def test_text_only_model_refuses_an_image(image_file):
    with pytest.raises(RequestError, match="text only"):
        validate(req(model="t2v-a14b", image=str(image_file)))


def test_image_model_requires_an_image():
    with pytest.raises(RequestError, match="needs a start image"):
        validate(req(model="i2v-a14b"))


def test_missing_image_file(tmp_path: Path):
    with pytest.raises(RequestError, match="does not exist"):
        validate(req(image=str(tmp_path / "nope.png")))


def test_zero_byte_image(tmp_path: Path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(RequestError, match="empty"):
        check_image(p)


def test_corrupt_image(tmp_path: Path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(RequestError, match="cannot be read"):
        check_image(p)


def test_truncated_image(tmp_path: Path, image_file: Path):
    data = image_file.read_bytes()
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(RequestError, match="cannot be read"):
        check_image(p)


def test_gigapixel_header_is_refused_without_decoding(tmp_path: Path):
    # A 1-bit 40000×40000 PNG is tiny on disk but 1.6 gigapixels once decoded.
    p = tmp_path / "bomb.png"
    Image.new("1", (40000, 40000)).save(p, optimize=True)
    assert p.stat().st_size < 5_000_000
    with pytest.raises(RequestError, match="megapixels"):
        check_image(p)


def test_tiny_image_is_refused(tmp_path: Path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (4, 4)).save(p)
    with pytest.raises(RequestError, match="at least"):
        check_image(p)


def test_load_image_crops_to_the_requested_aspect(image_file: Path):
    im = load_image(image_file, 128, 128)
    assert im.size == (128, 128) and im.mode == "RGB"
    # The 300×200 gradient runs red left→right; a centre crop keeps the middle of it.
    left, right = im.getpixel((0, 64))[0], im.getpixel((127, 64))[0]
    assert 30 < left < right < 225


def test_request_round_trips_through_a_dict():
    r = validate(req(steps=3))
    assert GenerationRequest.from_dict(r.to_dict()) == r
    with pytest.raises(RequestError, match="unknown request field"):
        GenerationRequest.from_dict({**r.to_dict(), "sampler": "ddim"})
