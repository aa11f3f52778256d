"""The plan as the user sees it: sidecar, Beginner tab text, Unload models, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wan_studio.engine.request import GenerationRequest
from wan_studio.memory.hardware import GIB, Hardware, gpu


def test_demo_job_records_its_plan_and_the_tab_shows_it(studio: Any) -> None:
    from wan_studio.ui.beginner import plan_text

    result = studio.run(GenerationRequest(prompt="a fox", model="demo", width=64, height=64, num_frames=5, steps=2))
    sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
    assert sidecar["plan"]["model"] == "demo" and sidecar["plan_retries"] == 0
    text = plan_text(sidecar)
    assert sidecar["plan"]["label"] in text and "predicted" in text and "Why:" in text
    assert studio.unload_models().startswith("- in-process (this process): freed demo, ")
    assert studio.unload_models() == "- in-process (this process): nothing to free"


def test_plan_text_shows_predicted_and_actual_vram_and_retries() -> None:
    from wan_studio.ui.beginner import plan_text

    sidecar = {"plan": {"label": "model offload", "peak_vram_gib": {"cuda:0": 14.6}, "why": "it fits."},
               "peak_vram_gib": 14.1, "plan_retries": 1}
    text = plan_text(sidecar)
    assert "predicted 14.6 GiB" in text and "actual 14.1 GiB" in text and "Retried 1×" in text


def test_a_request_that_cannot_fit_is_refused_with_the_reason(settings: Any) -> None:
    from wan_studio.services import DoesNotFit, Studio

    studio = Studio.create(settings, hardware=Hardware((gpu(0, 24),), 16 * GIB, 16 * GIB))
    req = GenerationRequest(prompt="a fox", model="t2v-a14b").resolved()
    with pytest.raises(DoesNotFit, match="RAM"):
        studio.plans(req)


def test_beginner_tab_registers_unload_endpoint(studio: Any) -> None:
    from wan_studio.ui.blocks import build_app

    app = build_app(studio)
    names = {fn.api_name for fn in app.fns.values()}
    assert {"generate", "unload_models"} <= names
