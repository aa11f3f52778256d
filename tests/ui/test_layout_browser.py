"""A person in a real browser: the Advanced tab's cost line follows the form as it is typed, a refusal
marks one place, and the Queue table stays readable from 1280 to 1600 px wide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")

# Output panels of each tab that a failed run could mark with an "Error" badge.
# Per table cell: its text, on how many lines the text lies, and how far (px) it runs past the cell's
# right edge, measured on the text's own line boxes.
LINES_JS = """cells => cells.map(c => {
  const tops = new Set(); let right = -Infinity;
  const walk = document.createTreeWalker(c, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    if (!walk.currentNode.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(walk.currentNode);
    for (const b of range.getClientRects()) if (b.width > 0) { tops.add(Math.round(b.top)); right = Math.max(right, b.right); }
  }
  return {text: c.textContent.trim(), lines: tops.size, overflow: right - c.getBoundingClientRect().right};
})"""
PANELS = {"Advanced": ("#adv-video", "#adv-file", "#adv-params", "#adv-status"),
          "Intermediate": ("#inter-joined", "#inter-scene", "#inter-talk", "#inter-params", "#inter-status")}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, server, tab: str, width: int = 1400):
    page = browser.new_context(viewport={"width": width, "height": 1100}).new_page()
    page.goto(server.url, wait_until="networkidle")
    page.get_by_role("tab", name=tab).click()
    return page


def _cost(page) -> str:
    return page.locator("#adv-cost").inner_text()


def test_the_cost_line_follows_the_prompt_as_typed_and_says_not_downloaded_before_generate(browser, server) -> None:
    page = _open(browser, server, "Advanced")
    try:
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('Type a prompt')",
                               timeout=20_000)
        page.locator("#adv-prompt textarea").press_sequentially("a lighthouse", delay=20)
        page.wait_for_function("() => !document.querySelector('#adv-cost').innerText.includes('Type a prompt')",
                               timeout=20_000)
        assert "This will cost" in _cost(page)
        page.locator("#adv-prompt textarea").fill("")
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('Type a prompt')",
                               timeout=20_000)
        # A preset for a model that is not here: the line says so before anyone presses Generate.
        page.locator("#adv-preset input").click()
        page.get_by_role("option", name="A14B · 480p 5 s (T2V-A14B, two experts)").click()
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('not downloaded')",
                               timeout=20_000)
        assert "T2V-A14B" in _cost(page) and page.locator("#adv-width input").input_value() == "832"
        assert not server.studio.queue.store.list(("queued", "running"), limit=10)  # nothing was submitted
    finally:
        page.context.close()


@pytest.mark.parametrize("tab", ["Advanced", "Intermediate"])
def test_a_refusal_marks_one_place_not_every_panel(browser, server, tab: str) -> None:
    page = _open(browser, server, tab)
    try:
        if tab == "Advanced":
            page.locator("#adv-prompt textarea").fill("")
            page.locator("#adv-generate").click()
        else:
            page.locator("#inter-generate").click()
        page.locator(".toast-body.error").first.wait_for(timeout=30_000)
        marked = [sel for sel in PANELS[tab] if page.locator(f"{sel} .error").count()]
        assert len(marked) == 1, marked
    finally:
        page.context.close()


def test_the_queue_table_is_readable_from_1280_to_1600_px(browser, server, tmp_path: Path) -> None:
    from gradio_client import Client

    client = Client(server.url, verbose=False)
    tiny = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
    prompt = "a very long prompt about a harbour at dawn with fishing boats, gulls, fog and a lighthouse " * 3
    job = client.predict(prompt, "demo-fast", 5, tiny, 0, api_name="/submit")
    page = _open(browser, server, "Queue", 1280)
    try:
        page.wait_for_function("id => document.querySelector('#queue-table').innerText.includes(id)", arg=job,
                               timeout=30_000)
        for width in (1280, 1400, 1600):
            page.set_viewport_size({"width": width, "height": 1100})
            page.wait_for_function("w => window.innerWidth === w", arg=width)
            page.screenshot(path=str(tmp_path / f"queue-{width}.png"), full_page=True)
            heads = page.locator("#queue-table thead th").evaluate_all(LINES_JS)
            named = [h for h in heads if h["text"]]
            assert len(named) >= 5, heads
            # Each header on one line: one squeezed into a narrow column wraps letter by letter.
            assert all(h["lines"] == 1 for h in named), (width, heads)
            cells = [c for c in page.locator("#queue-table tbody td").evaluate_all(LINES_JS) if c["text"]]
            assert any(prompt[:30] in c["text"] for c in cells), cells
            # Long cells wrap inside their column: no text runs past its cell's edge (clipped).
            assert all(c["overflow"] <= 1 for c in cells), (width, [c for c in cells if c["overflow"] > 1])
        assert sorted(p.name for p in tmp_path.glob("queue-*.png")) == ["queue-1280.png", "queue-1400.png",
                                                                        "queue-1600.png"]
    finally:
        page.context.close()


def test_load_these_settings_from_a_dropped_video_fills_the_form_in_the_browser(browser, server, demo_pipe,
                                                                               tmp_path: Path) -> None:
    from tests.ui.test_load_settings import made_here

    video = made_here(demo_pipe, tmp_path, prompt="a paper crane", seed=808, width=96, height=64)
    page = _open(browser, server, "Advanced")
    try:
        # Another model first: loading the video must bring back its model and its own size together.
        page.locator("#adv-preset input").click()
        page.get_by_role("option", name="A14B · 480p 5 s (T2V-A14B, two experts)").click()
        page.wait_for_function("() => document.querySelector('#adv-width input').value === '832'", timeout=20_000)
        page.get_by_text("Settings from a video made here").click()
        page.locator("#adv-settings-video input[type=file]").set_input_files(video)
        page.locator("#adv-settings-video").get_by_text(Path(video).name).first.wait_for(timeout=20_000)
        page.locator("#adv-load-settings").click()
        page.wait_for_function("() => document.querySelector('#adv-load-status').innerText.includes('seed 808')",
                               timeout=20_000)
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('96×64')",
                               timeout=20_000)
        page.wait_for_load_state("networkidle")
        assert page.locator("#adv-prompt textarea").input_value() == "a paper crane"
        assert (page.locator("#adv-width input").input_value(), page.locator("#adv-height input").input_value()) \
            == ("96", "64")
        assert "from the video itself" in page.locator("#adv-load-status").inner_text()
    finally:
        page.context.close()
