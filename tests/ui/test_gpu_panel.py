"""GPU panel: card HTML, and the app served on 127.0.0.1 with a fake NVML behind it."""

from __future__ import annotations

import time

import pytest

from tests.gpu.fake_nvml import FakeGpu, FakeNvml
from wan_studio.gpu import GpuSample, NvmlTelemetry, TelemetrySampler, ThermalLimits, local_host
from wan_studio.memory.manager import ModelManager
from wan_studio.ui.gpu_panel import cards_html

GIB = 2**30


def sample(**kw) -> GpuSample:
    base = dict(host=local_host(), index=0, name="NVIDIA GeForce RTX 3090", t=time.time(),
                mem_used_bytes=18 * GIB, mem_total_bytes=24 * GIB, temperature_c=70.0, power_w=300.0,
                power_limit_w=350.0, utilization_pct=98.0)
    return GpuSample(**{**base, **kw})


def test_cards_show_vram_temperature_power_and_load() -> None:
    html = cards_html([sample(app_used_bytes=15 * GIB)], ThermalLimits(), "")
    assert "GPU 0" in html and "VRAM 18.0 / 24.0 GiB" in html and "Wan Studio 15.0 GiB" in html
    assert "width:75%" in html and "70 °C" in html and "300 / 350 W" in html and "load 98 %" in html
    assert 'data-level="ok"' in html


@pytest.mark.parametrize(("temp", "level", "colour"), [(70, "ok", "#2e9d4f"), (80, "warm", "#d98a00"),
                                                       (86, "hot", "#d1242f")])
def test_temperature_colour_follows_the_guard_limits(temp: float, level: str, colour: str) -> None:
    html = cards_html([sample(temperature_c=temp)], ThermalLimits(), "")
    assert f'data-level="{level}"' in html and f"color:{colour}" in html
    assert ("jobs pause until 75 °C" in html) == (level == "hot")


def test_lost_gpu_and_throttling_are_said_plainly() -> None:
    lost = GpuSample(local_host(), 1, "RTX 3090", time.time(), status="lost", error="GPU is lost")
    html = cards_html([sample(throttle_reasons=("idle", "thermal (hardware)")), lost], ThermalLimits(), "")
    assert "clocks limited: thermal (hardware)" in html and "idle" not in html
    assert "GPU 1" in html and "stopped responding (GPU is lost)" in html


def test_no_gpu_machine_says_so() -> None:
    html = cards_html([], ThermalLimits(), "No NVIDIA GPU found on this machine (NVML: not found).")
    assert "No NVIDIA GPU found on this machine" in html and "demo model runs on the CPU" in html


def test_gpu_names_are_escaped() -> None:
    assert "<script>" not in cards_html([sample(name="<script>x</script>")], ThermalLimits(), "")


@pytest.fixture
def served(settings, demo_pipe):
    """The whole app on 127.0.0.1 with one fake GPU; yields (url, fake NVML)."""
    from wan_studio.services import Studio
    from wan_studio.ui.blocks import build_app, launch_kwargs

    fake = FakeNvml([FakeGpu(temperature=55)])
    sampler = TelemetrySampler(NvmlTelemetry(fake), interval_s=0.05, history_s=60)
    studio = Studio.create(settings, manager=ModelManager(lambda spec: (demo_pipe, "cpu")), telemetry=sampler)
    app = build_app(studio)
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs(studio))
    try:
        yield app.local_url, fake
    finally:
        app.close()
        studio.close()


def test_gpu_samples_endpoint_answers_while_a_job_is_paused_for_heat(served) -> None:
    from gradio_client import Client

    url, fake = served
    client = Client(url, verbose=False)
    first = client.predict(api_name="/gpu_samples")
    (gpu,) = first["gpus"]
    assert (gpu["label"], gpu["name"], gpu["temperature_c"]) == ("GPU 0", "NVIDIA GeForce RTX 3090", 55)
    assert gpu["mem_total_bytes"] == 24 * GIB and first["thermal"] == {"enabled": True, "pause_c": 83.0,
                                                                       "resume_c": 75.0}
    fake.gpus[0].temperature = 91
    deadline = time.monotonic() + 30
    while client.predict(api_name="/gpu_samples")["gpus"][0]["temperature_c"] != 91:
        assert time.monotonic() < deadline, "the sampler never saw the GPU heat up"
        time.sleep(0.05)
    job = client.submit("lava lamp", None, "demo-fast", 5, api_name="/generate")
    deadline = time.monotonic() + 60
    desc = ""
    while "paused" not in desc:
        assert time.monotonic() < deadline and not job.done(), "the job never paused"
        progress = job.status().progress_data or []
        desc = " ".join(p.desc or "" for p in progress)
        time.sleep(0.05)
    assert "paused: GPU 0 at 91 °C, cooling" in desc
    # While the job waits, the panel's data still comes: it is not queued behind the paused job
    # (which only ends once the GPU cools, and nothing cools it before this answer).
    during = client.submit(api_name="/gpu_samples").result(timeout=60)
    assert during["gpus"][0]["temperature_c"] == 91
    assert not job.done()
    fake.gpus[0].temperature = 60
    video, files, params, status = job.result(timeout=120)
    assert status.startswith("Done") and params["thermal_pauses"][0]["ended"] == "cooled"


def test_panel_in_the_browser_follows_the_gpu(served) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, fake = served
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            card = page.locator('#gpu-cards .gpu-card[data-gpu="GPU 0"]')
            sync_api.expect(card).to_contain_text("55 °C", timeout=15_000)
            sync_api.expect(card).to_contain_text("VRAM 2.0 / 24.0 GiB")
            fake.gpus[0].temperature = 86
            fake.gpus[0].used = 12 * GIB
            # The timer refreshes the card by itself: no click, no reload.
            sync_api.expect(card).to_have_attribute("data-level", "hot", timeout=10_000)
            sync_api.expect(card).to_contain_text("86 °C")
            sync_api.expect(card).to_contain_text("VRAM 12.0 / 24.0 GiB")
            sync_api.expect(card).to_contain_text("too hot: jobs pause until 75 °C")
        finally:
            browser.close()
