"""A person in a real browser on the Queue tab: the live list, the gallery, "Load these settings"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


def test_queue_tab_lists_jobs_live_and_reloads_settings_from_a_video(server) -> None:
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    client = Client(server.url, verbose=False)
    tiny = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
    done_id = client.predict("a paper boat", "demo-fast", 4242, tiny, 0, api_name="/submit")
    deadline = time.monotonic() + 90
    while client.predict(done_id, api_name="/job_status")["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
            page.goto(server.url, wait_until="networkidle")
            page.get_by_role("tab", name="Queue").click()
            # A job submitted after the page opened shows up by itself (the timer refreshes the list).
            late_id = client.predict("a late kite", "demo-fast", 7, tiny, 0, api_name="/submit")
            page.wait_for_function("id => document.querySelector('#queue-table').innerText.includes(id)",
                                   arg=late_id, timeout=30_000)
            assert done_id in page.locator("#queue-table").inner_text()
            # Both videos in the gallery; the user picks the older one (not the first thumbnail).
            deadline = time.monotonic() + 90
            while client.predict(late_id, api_name="/job_status")["status"] != "done":
                assert time.monotonic() < deadline, "the late job did not finish"
                time.sleep(0.2)
            thumbs = page.locator("#queue-gallery button[aria-label^='Thumbnail']")
            boat = thumbs.filter(has_text="seed 4242 · a paper boat")
            thumbs.filter(has_text="seed 7 · a late kite").wait_for(timeout=30_000)
            assert thumbs.first.inner_text() != boat.inner_text()  # newest first: the kite leads
            boat.click()
            page.locator("#queue-video video").wait_for(state="attached", timeout=30_000)
            page.locator("#queue-load").click()
            page.wait_for_function(
                "() => (document.querySelector('#queue-rerun-settings')?.innerText || '').includes('\"seed\"')",
                timeout=30_000)
            settings = page.locator("#queue-rerun-settings").inner_text()
            assert '"seed": 4242' in settings and "a paper boat" in settings, settings
            assert '"seed": 7' not in settings and "a late kite" not in settings
        finally:
            browser.close()
