"""The Advanced tab shows the model's official negative prompt behind a blank field (English gloss
as help, never as the value) and carries the framing choice into the request."""

from __future__ import annotations

from tests.ui.test_advanced_tab import BASE
from wan_studio.catalog.specs import get_spec
from wan_studio.ui.advanced_form import AdvancedForm, build_request, negative_prompt_help


def test_blank_negative_prompt_shows_the_official_one_with_an_english_gloss() -> None:
    placeholder, help_text = negative_prompt_help(get_spec("t2v-a14b"))
    assert placeholder == get_spec("t2v-a14b").negative_prompt and placeholder.startswith("色调艳丽")
    assert "In English:" in help_text and "walking backwards" in help_text
    s2v_placeholder, _ = negative_prompt_help(get_spec("s2v-14b"))
    assert s2v_placeholder.startswith("画面模糊")
    # A blank field sends nothing, so the model's default applies; a user's own text is kept as typed.
    assert build_request(AdvancedForm(**{**BASE, "model": "t2v-a14b"})).negative_prompt is None
    own = build_request(AdvancedForm(**{**BASE, "negative_prompt": "blurry, text"}))
    assert own.negative_prompt == "blurry, text" and own.resolved().negative_prompt == "blurry, text"
    assert build_request(AdvancedForm(**{**BASE, "model": "t2v-a14b"})).resolved().negative_prompt == placeholder


def test_framing_choice_reaches_the_request() -> None:
    assert build_request(AdvancedForm(**BASE)).framing is None  # official framing
    assert build_request(AdvancedForm(**{**BASE, "framing": "crop"})).framing == "crop"
