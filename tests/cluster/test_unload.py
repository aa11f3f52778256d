"""Unload models reaches the worker processes that hold them (what the Beginner tab's button and the
admin ``/unload_models`` endpoint call), says what each freed, and the next job loads again."""

from __future__ import annotations

import json
from typing import Any

from wan_studio.engine.request import GenerationRequest
from wan_studio.services import Studio


def _sidecar(result: Any) -> dict[str, Any]:
    return json.loads(result.sidecar_path.read_text(encoding="utf-8"))


def test_unload_empties_the_worker_process_and_the_next_job_reloads(settings: Any) -> None:
    studio = Studio.create(settings)  # no injected manager: jobs run in a worker process
    try:
        req = GenerationRequest(prompt="a fox", model="demo", width=64, height=64, num_frames=5, steps=2, seed=1)
        first = studio.run(req)
        assert studio.queue.executor.loaded() == {"worker-0": ("demo",)}
        assert _sidecar(studio.run(req))["model_was_loaded"] is True
        text = studio.unload_models()
        assert text.startswith("- worker-0 (cpu): freed demo,") and "GiB" in text, text
        assert studio.queue.executor.loaded() == {"worker-0": ()}
        freed = studio.queue.executor.unload()
        assert freed[0].components == 0 and "nothing to free" in freed[0].describe()
        again = studio.run(req)
        assert _sidecar(again)["model_was_loaded"] is False and _sidecar(first)["worker"] == "worker-0"
    finally:
        studio.close()
