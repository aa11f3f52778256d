"""The Advanced tab on a real server: its API endpoints through gradio_client, and a browser run of a
long clip on the demo model."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wan_studio.engine.video_io import read_mp4
from wan_studio.ui.advanced_form import HAND_FIELDS
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

BASE: dict[str, Any] = dict(
    model="demo", prompt="a paper boat on a pond", negative_prompt="", image=None, last_image=None, audio=None,
    seed=11, steps=2, shift=5.0, guidance=5.0, guidance_2=0, width=64, height=64, frames=5, fps=8,
    long_clip=False, total_seconds=2, overlap=0, window_prompts="", loras="", step_cache="off", cache_threshold=0,
    storage="auto", offload="auto", text_encoder="auto", gpu="auto", attention="auto", compile="auto",
    decode="auto", fast="off", motion_steps=0, framing="official")


def values(**changes: Any) -> list[Any]:
    """The form's values by position, in the order of one release ago (kept for that release;
    tests/ui/test_named_endpoints.py calls by name)."""
    form = {**BASE, **changes}
    return [form[name] for name in HAND_FIELDS]


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def _ms(line: str) -> float:
    m = re.search(r"about ([\d.e+-]+) (ms|s|min) for the job", line)
    assert m, line
    return float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "min": 60.0}[m.group(2)]


def test_cost_line_follows_size_and_frames(client) -> None:
    small, _ = client.predict(*values(width=128, height=128, frames=9), api_name="/advanced_cost")
    wide, _ = client.predict(*values(width=256, height=256, frames=9), api_name="/advanced_cost")
    longer, _ = client.predict(*values(width=128, height=128, frames=33), api_name="/advanced_cost")
    assert small.startswith("**This will cost:**") and "peak VRAM" in small
    assert _ms(wide) > _ms(small) and _ms(longer) > _ms(small)
    clip, _ = client.predict(*values(width=128, height=128, frames=9, long_clip=True, total_seconds=4),
                             api_name="/advanced_cost")
    assert "windows ×" in clip and _ms(clip) > _ms(small)


def test_cost_line_for_1080p_ti2v_and_a_refused_override(client) -> None:
    line, auto = client.predict(*values(model="ti2v-5b", width=1920, height=1088, frames=121, fps=24, steps=50),
                                api_name="/advanced_cost")
    # No GPU and 24 GiB here: the planner says what it would take either way, before Generate.
    assert ("This will cost" in line and "tiled VAE decode" in line) or "Cannot run as set" in line
    bad, _ = client.predict(*values(offload="resident"), api_name="/advanced_cost")
    assert "Cannot run as set" in bad and "offload resident" in bad
    assert "Automatic choice" in auto


def test_generate_runs_a_long_clip_with_overrides_recorded(client, server) -> None:
    video, files, sidecar, status = client.predict(
        *values(long_clip=True, total_seconds=2, overlap=1, window_prompts="a boat\na swan\na frog\na leaf",
                offload="cpu", attention="sdpa"),
        api_name="/advanced_generate")
    assert "Done in" in status and "windows" in status
    side = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert side["long_clip"]["windows"] == 4 and side["video"]["frames"] == 17
    assert side["overrides"] == {"offload": "cpu", "attention": "sdpa"}
    assert side["plan"]["label"] == "cpu" and side["attention_backend"] == "sdpa"
    assert side["request"]["preset"] == "advanced"
    # The job went through the queue, so the Queue tab lists it.
    assert any(j.id == side["job_id"] and j.status == "done" for j in server.studio.queue.store.list(limit=50))


def test_bad_settings_and_demo_calibration_are_refused_clearly(client) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="one prompt, or one per window"):
        client.predict(*values(long_clip=True, total_seconds=2, overlap=1, window_prompts="a\nb"),
                       api_name="/advanced_generate")
    with pytest.raises(AppError, match="random weights"):
        client.predict(*values(), api_name="/advanced_calibrate")
    with pytest.raises(AppError, match="MagCache has no ratios"):
        client.predict(*values(step_cache="mag"), api_name="/advanced_generate")


def test_batch_queues_prompts_times_seeds(client, server) -> None:
    before = len(server.studio.queue.store.list(limit=500))
    text = client.predict(*values(), "a kite\n\na lamp", 2, 40, api_name="/advanced_batch")
    assert text.startswith("Queued 4 jobs")
    jobs = server.studio.queue.store.list(limit=500)
    assert len(jobs) == before + 4
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(j.status in ("queued", "running") for j in
                                              server.studio.queue.store.list(limit=500)):
        time.sleep(0.2)
    seeds = sorted(j.request["seed"] for j in server.studio.queue.store.list(limit=500)
                   if j.request["prompt"] in ("a kite", "a lamp"))
    assert seeds == [40, 40, 41, 41]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_browser_long_clip_on_the_demo_model(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
        page.goto(server.url, wait_until="networkidle")
        page.get_by_role("tab", name="Advanced").click()
        page.locator("#adv-prompt textarea").fill("a lighthouse at night")
        for name, value in (("width", "64"), ("height", "64"), ("frames", "5"), ("steps", "2")):
            page.locator(f"#adv-{name} input").fill(value)
            page.locator(f"#adv-{name} input").press("Enter")
        cost = page.locator("#adv-cost")
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('64×64')", timeout=20_000)
        page.get_by_text("Long clip (sliding windows").click()
        page.locator("#adv-long input").check()
        page.locator("#adv-total-seconds input").fill("3")
        page.locator("#adv-total-seconds input").press("Enter")
        page.wait_for_function("() => document.querySelector('#adv-cost').innerText.includes('windows ×')",
                               timeout=20_000)
        assert "This will cost" in cost.inner_text()
        page.locator("#adv-generate").click()
        page.wait_for_function(
            "() => { const v = document.querySelector('#adv-video video');"
            " return v && v.readyState >= 2 && v.duration > 0 && !v.error; }", timeout=120_000)
        duration = page.evaluate("() => document.querySelector('#adv-video video').duration")
        assert duration == pytest.approx(25 / 8, abs=0.2)  # 3 s at 8 fps → 25 frames (4k+1)
        assert "windows" in page.locator("#adv-status").inner_text()
        page.screenshot(path=str(tmp_path / "advanced.png"), full_page=True)
        browser.close()


def test_bf16_decode_pin_is_applied_and_recorded(client) -> None:
    def run(**changes: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _video, files, _sidecar, status = client.predict(*values(seed=5, **changes), api_name="/advanced_generate")
        assert "Done in" in status, status
        side = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
        return read_mp4(Path(next(f for f in files if f.endswith(".mp4"))))[0], side

    exact, plain = run()
    fast, side = run(decode="bf16")
    assert "vae_decode" not in plain and side["vae_decode"] == "bf16" and side["overrides"] == {"decode": "bf16"}
    assert side["speed"]["vae_decode"] == "bf16"
    assert exact.shape == fast.shape and not np.array_equal(exact, fast)
    assert np.abs(exact.astype(int) - fast.astype(int)).mean() < 8  # the same video, slightly different pixels


def test_a_fast_recipe_makes_a_4_step_one_pass_job_and_says_so_before_generate(client) -> None:
    line, _ = client.predict(*values(fast="demo-distilled", steps=30, guidance=5.0), api_name="/advanced_cost")
    assert "4 steps, one pass each (guidance 1)" in line
    plain, _ = client.predict(*values(steps=4), api_name="/advanced_cost")
    assert "two passes each" in plain and _ms(line) < _ms(plain)
    _video, files, _sidecar, status = client.predict(*values(fast="demo-distilled", motion_steps=1),
                                                     api_name="/advanced_generate")
    assert "Done in" in status
    side = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert side["request"]["steps"] == 4 and side["request"]["guidance"] == 1.0
    assert side["fast"] == {"recipe": "demo-distilled", "motion_steps": 1,
                            "trades": "quality and motion for speed (docs/FAST.md)"}
