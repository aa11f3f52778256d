"""GPU panel, shown above the tabs: one card per GPU (VRAM bar, temperature, power, load) and the
VRAM and temperature history of the last 10 minutes, refreshed by a ``gr.Timer``.

Refreshing only reads the sampler's memory (never NVML), so it never waits on or delays a job.
Also registers the ``/gpu_samples`` API endpoint.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass
from typing import Any, Sequence

import gradio as gr
import pandas as pd

from wan_studio.gpu import GpuSample, TelemetrySampler, ThermalLimits
from wan_studio.services import Studio

GIB = 2**30
PLOT_WINDOW_S = 600.0
MAX_PLOT_POINTS = 300  # per GPU: enough for a 10-minute line, light for the browser
LEVEL_COLOURS = {"ok": "#2e9d4f", "warm": "#d98a00", "hot": "#d1242f", "unknown": "#888888"}


@dataclass
class GpuPanel:
    """Widgets of the panel, kept so ``listen`` can wire them."""

    cards: gr.HTML
    vram_plot: gr.LinePlot
    temp_plot: gr.LinePlot
    timer: gr.Timer


def _limits(studio: Studio) -> ThermalLimits:
    return studio.thermal.limits if studio.thermal is not None else ThermalLimits()


def _card(s: GpuSample, limits: ThermalLimits, stale_s: float | None) -> str:
    title = f"<b>{html.escape(s.label)}</b> · {html.escape(s.name)}"
    if not s.ok:
        body = f"<div>stopped responding ({html.escape(s.error or 'no answer')})</div>"
        return f'<div class="gpu-card" data-gpu="{html.escape(s.label)}" data-level="lost" style="{_CARD}">{title}{body}</div>'
    level = limits.level(s.temperature_c)
    total = s.mem_total_bytes or 0
    used = s.mem_used_bytes or 0
    pct = 100 * used / total if total else 0.0
    ours = f" · Wan Studio {s.app_used_bytes / GIB:.1f} GiB" if s.app_used_bytes else ""
    parts = [f'<span class="gpu-temp" style="color:{LEVEL_COLOURS[level]};font-weight:600">'
             f"{s.temperature_c:.0f} °C</span>"]
    if s.power_w is not None:
        parts.append(f"{s.power_w:.0f}" + (f" / {s.power_limit_w:.0f} W" if s.power_limit_w else " W"))
    if s.utilization_pct is not None:
        parts.append(f"load {s.utilization_pct:.0f} %")
    if s.sm_clock_mhz is not None:
        parts.append(f"{s.sm_clock_mhz} MHz")
    if s.fan_pct is not None:
        parts.append(f"fan {s.fan_pct:.0f} %")
    notes = []
    if level == "hot":
        notes.append(f"too hot: jobs pause until {limits.resume_c:.0f} °C")
    throttles = [r for r in s.throttle_reasons if r != "idle"]
    if throttles:
        notes.append("clocks limited: " + ", ".join(throttles))
    if stale_s is not None:
        notes.append(f"no new data for {stale_s:.0f} s")
    bar_colour = "#d1242f" if pct >= 95 else "#4a7bd1"
    return (
        f'<div class="gpu-card" data-gpu="{html.escape(s.label)}" data-level="{level}" style="{_CARD}">'
        f"<div>{title}</div>"
        f"<div>VRAM {used / GIB:.1f} / {total / GIB:.1f} GiB{ours}</div>"
        f'<div style="background:#8884;height:8px;border-radius:4px;margin:4px 0">'
        f'<div class="gpu-vram-bar" style="width:{pct:.0f}%;background:{bar_colour};height:8px;border-radius:4px"></div></div>'
        f"<div>{' · '.join(parts)}</div>"
        + "".join(f'<div class="gpu-note" style="font-size:0.85em">{html.escape(n)}</div>' for n in notes)
        + "</div>"
    )


_CARD = "border:1px solid #8886;border-radius:8px;padding:8px 12px;min-width:240px;flex:1"


def cards_html(samples: Sequence[GpuSample], limits: ThermalLimits, no_gpu_reason: str,
               stale: dict[tuple[str, int], float] | None = None) -> str:
    """The cards of ``samples`` as HTML; the plain no-GPU sentence when there are none.

    ``stale`` maps GPUs whose newest sample is old to its age in seconds.
    """
    if not samples:
        return (f'<div class="gpu-none">{html.escape(no_gpu_reason)} The app works without one: the demo '
                "model runs on the CPU.</div>")
    stale = stale or {}
    cards = "".join(_card(s, limits, stale.get(s.key)) for s in samples)
    guard = (f"Jobs pause between steps at {limits.pause_c:.0f} °C and resume at {limits.resume_c:.0f} °C."
             if limits.enabled else "Thermal guard off: jobs never pause for heat.")
    return (f'<div class="gpu-cards" style="display:flex;flex-wrap:wrap;gap:8px">{cards}</div>'
            f'<div style="font-size:0.85em;opacity:0.8">{guard}</div>')


def history_frames(sampler: TelemetrySampler, window_s: float = PLOT_WINDOW_S) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(VRAM GiB, temperature °C) over the last ``window_s`` seconds, one row per sample and GPU."""
    vram_rows: list[dict[str, Any]] = []
    temp_rows: list[dict[str, Any]] = []
    for _key, samples in sampler.history(window_s).items():
        ok = [s for s in samples if s.ok]
        step = max(1, len(ok) // MAX_PLOT_POINTS)
        for s in ok[::step]:
            when = _dt.datetime.fromtimestamp(s.t)
            if s.mem_used_bytes is not None:
                vram_rows.append({"time": when, "GiB": s.mem_used_bytes / GIB, "gpu": s.label})
            if s.temperature_c is not None:
                temp_rows.append({"time": when, "°C": s.temperature_c, "gpu": s.label})
    vram = pd.DataFrame(vram_rows, columns=["time", "GiB", "gpu"])
    temp = pd.DataFrame(temp_rows, columns=["time", "°C", "gpu"])
    return vram, temp


def _state(studio: Studio) -> tuple[str, pd.DataFrame, pd.DataFrame, bool]:
    sampler = studio.telemetry
    if sampler is None:
        empty = pd.DataFrame(columns=["time", "GiB", "gpu"])
        return cards_html([], _limits(studio), "GPU telemetry is off."), empty, empty, False
    latest = sampler.latest()
    now_stale = {s.key: sampler.age_s(s) for s in latest if sampler.is_stale(s)}
    vram, temp = history_frames(sampler)
    return cards_html(latest, _limits(studio), sampler.reason, now_stale), vram, temp, bool(latest)


def render(studio: Studio) -> GpuPanel:
    """Lay out the panel; call inside the app's ``gr.Blocks``, outside the tabs."""
    cards_value, vram, temp, any_gpu = _state(studio)
    with gr.Accordion("GPUs", open=True, elem_id="gpu-panel"):
        cards = gr.HTML(cards_value, elem_id="gpu-cards")
        # Without a GPU there is no history to plot: the accordion would only open onto nothing.
        with gr.Accordion("History (last 10 minutes)", open=False, visible=any_gpu, elem_id="gpu-history"):
            with gr.Row():
                vram_plot = gr.LinePlot(vram, x="time", y="GiB", color="gpu", title="VRAM used (GiB)",
                                        y_lim=[0, None], height=220, visible=any_gpu, elem_id="gpu-vram-plot")
                temp_plot = gr.LinePlot(temp, x="time", y="°C", color="gpu", title="Temperature (°C)",
                                        height=220, visible=any_gpu, elem_id="gpu-temp-plot")
    interval = studio.telemetry.interval_s if studio.telemetry is not None else 5.0
    timer = gr.Timer(max(interval, 1.0))
    return GpuPanel(cards, vram_plot, temp_plot, timer)


def gpu_samples_payload(studio: Studio) -> dict[str, Any]:
    """The current samples of every known GPU as JSON (the ``/gpu_samples`` answer)."""
    if studio.telemetry is None:
        return {"host": None, "note": "GPU telemetry is off.", "gpus": []}
    payload = studio.telemetry.snapshot()
    limits = _limits(studio)
    payload["thermal"] = {"enabled": limits.enabled, "pause_c": limits.pause_c, "resume_c": limits.resume_c}
    return payload


def listen(panel: GpuPanel, studio: Studio) -> None:
    """Wire the timer and register ``/gpu_samples``; call inside the app's ``gr.Blocks``."""

    def refresh() -> tuple[str, Any, Any]:
        cards_value, vram, temp, any_gpu = _state(studio)
        return cards_value, gr.LinePlot(vram, visible=any_gpu), gr.LinePlot(temp, visible=any_gpu)

    # Own concurrency group with no limit: a refresh never waits for the GPU job's slot.
    panel.timer.tick(refresh, outputs=[panel.cards, panel.vram_plot, panel.temp_plot],
                     api_visibility="private", concurrency_limit=None, concurrency_id="gpu-panel",
                     show_progress="hidden")

    def gpu_samples() -> dict[str, Any]:
        """Current samples of every GPU (host, index, name, VRAM bytes, °C, W, %, MHz, throttle)."""
        return gpu_samples_payload(studio)

    gr.api(gpu_samples, api_name="gpu_samples", concurrency_limit=None, concurrency_id="gpu-panel")
