"""The catalog carries the official Wan2.2 defaults and sizes."""

from __future__ import annotations

import pytest

from wan_studio.catalog.specs import CATALOG, get_spec


def test_all_four_models_and_the_demo_are_listed():
    assert set(CATALOG) == {"demo", "demo-s2v", "ti2v-5b", "t2v-a14b", "i2v-a14b", "s2v-14b"}


@pytest.mark.parametrize(
    "key, steps, shift, guidance, guidance_2, boundary, frames, fps, size",
    [
        ("ti2v-5b", 50, 5.0, 5.0, None, None, 121, 24, (1280, 704)),
        ("t2v-a14b", 40, 12.0, 4.0, 3.0, 0.875, 81, 16, (1280, 720)),
        ("i2v-a14b", 40, 5.0, 3.5, 3.5, 0.9, 81, 16, (1280, 720)),
        ("s2v-14b", 40, 3.0, 4.5, None, None, 80, 16, (1024, 704)),
    ],
)
def test_official_defaults(key, steps, shift, guidance, guidance_2, boundary, frames, fps, size):
    s = get_spec(key)
    assert (s.steps, s.shift, s.guidance, s.guidance_2, s.boundary, s.frames, s.fps, s.default_size) == (
        steps, shift, guidance, guidance_2, boundary, frames, fps, size)


def test_component_sizes_match_the_published_configs():
    ti2v = {c.name: c for c in get_spec("ti2v-5b").components}
    assert ti2v["transformer"].bytes / 2**30 == pytest.approx(9.3, abs=0.1)
    assert ti2v["text_encoder"].bytes / 2**30 == pytest.approx(10.6, abs=0.1)
    t2v = {c.name: c for c in get_spec("t2v-a14b").components}
    assert t2v["transformer"].bytes / 2**30 == pytest.approx(26.6, abs=0.1)
    assert t2v["transformer_2"].params == t2v["transformer"].params
    # The UMT5 encoder is one shared component across the family.
    keys = {c.share_key for k in ("ti2v-5b", "t2v-a14b", "i2v-a14b", "s2v-14b")
            for c in get_spec(k).components if c.name == "text_encoder"}
    assert keys == {"umt5-xxl"}


def test_vae_kind_and_size_multiple():
    assert get_spec("ti2v-5b").vae == "wan2.2" and get_spec("ti2v-5b").size_multiple == 32
    assert get_spec("t2v-a14b").vae == "wan2.1" and get_spec("t2v-a14b").size_multiple == 16


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(KeyError, match="ti2v-5b"):
        get_spec("wan3")


@pytest.mark.parametrize("key", ["ti2v-5b", "t2v-a14b", "i2v-a14b", "s2v-14b"])
def test_every_model_offers_a_portrait_size(key):
    sizes = get_spec(key).sizes
    assert any(h > w for w, h in sizes)
    if key != "ti2v-5b":  # the official 720p and 480p portrait sizes
        assert {(720, 1280), (480, 832)} <= set(sizes)


@pytest.mark.parametrize("key, head, tail", [
    ("ti2v-5b", "色调艳丽，过曝，静态", "三条腿，背景人很多，倒着走"),
    ("t2v-a14b", "色调艳丽，过曝，静态", "三条腿，背景人很多，倒着走"),
    ("i2v-a14b", "色调艳丽，过曝，静态", "三条腿，背景人很多，倒着走"),
    ("s2v-14b", "画面模糊，最差质量，画面模糊", "三条腿，背景人很多，倒着走"),
])
def test_default_negative_prompt_is_the_official_chinese_one_with_an_english_gloss(key, head, tail):
    s = get_spec(key)
    assert s.negative_prompt.startswith(head) and s.negative_prompt.endswith(tail)
    # Only the "JPEG" of the general one is Latin script; the gloss is English help text.
    assert sum(c.isascii() and c.isalpha() for c in s.negative_prompt) in (0, 4)
    assert s.negative_prompt_gloss.isascii() and "walking backwards" in s.negative_prompt_gloss
    assert len(s.negative_prompt) == (116 if key == "s2v-14b" else 137)  # characters of the official strings
