"""A person in a real browser watches a job form: the Advanced tab's live preview appears during the
job and changes step by step, beside the job's own progress bar; the Intermediate tab has one
preview and one progress display per clip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")

PREVIEW_SRC = "() => { const i = document.querySelector('#adv-preview img'); return i ? i.src : null; }"


def test_the_preview_appears_and_updates_beside_the_jobs_progress(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
        page.goto(server.url, wait_until="networkidle")
        page.get_by_role("tab", name="Advanced").click()
        assert page.evaluate(PREVIEW_SRC) is None  # nothing runs: no picture
        page.locator("#adv-prompt textarea").fill("a lighthouse at night")
        for name, value in (("width", "128"), ("height", "128"), ("frames", "17"), ("steps", "100")):
            page.locator(f"#adv-{name} input").fill(value)
            page.locator(f"#adv-{name} input").press("Enter")
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('128×128')",
                               timeout=20_000)
        page.locator("#adv-generate").click()
        page.wait_for_function(PREVIEW_SRC, timeout=240_000)  # the first job starts the worker
        first = page.evaluate(PREVIEW_SRC)
        page.wait_for_function(f"() => {{ const s = ({PREVIEW_SRC})(); return s && s !== {first!r}; }}",
                               timeout=30_000)
        # a real picture, not a broken link (the newest one may still be arriving: wait for it)
        page.wait_for_function("() => { const i = document.querySelector('#adv-preview img');"
                               " return i && i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }",
                               timeout=30_000)
        # the job's progress display beside it: one bar, moving, with the step line
        bar = page.locator("#adv-progress progress")
        assert bar.count() == 1
        page.wait_for_function("() => Number(document.querySelector('#adv-progress progress').value) > 0",
                               timeout=30_000)
        assert "step" in page.locator("#adv-progress").inner_text()
        page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
        page.locator("#adv-cancel").click()
        page.wait_for_function(f"() => !({PREVIEW_SRC})()", timeout=60_000)  # the job ended: the panel empties
        assert page.locator("#adv-progress progress").count() == 0
        browser.close()


def test_the_intermediate_tab_has_one_preview_and_one_progress_display_per_clip(server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
        page.goto(server.url, wait_until="networkidle")
        page.get_by_role("tab", name="Intermediate").click()
        for part in ("scene", "talk"):
            assert page.locator(f"#inter-{part}-preview").count() == 1
            assert page.locator(f"#inter-{part}-progress").count() == 1
        browser.close()


def test_no_tab_draws_its_progress_over_all_of_its_outputs(server) -> None:
    from wan_studio.ui.blocks import build_app

    app = build_app(server.studio)
    config = app.get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    for name, status in (("intermediate", "inter-status"), ("generate", "beginner-status"),
                         ("advanced_generate", "adv-status")):
        dep = next(d for d in config["dependencies"] if d.get("api_name") == name)
        assert dep["show_progress"] == "minimal", name
        assert [ids[i] for i in dep["show_progress_on"]] == [status], name
