"""A worker knows which shapes its model has run, so each job's sidecar says what it expected to
compile and puts that prediction beside the measured first step: the first job compiles, the same
size again nothing, a compiled model at a second size recompiles, a model loaded afresh compiles
again. Demo model through ``WorkerRuntime.run_job`` (the path of every executor); the CPU does not
compile, so a compiled pipeline is stood in for where a recompile is expected."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from wan_studio.cluster import job_path
from wan_studio.cluster.runtime import RuntimeConfig, WorkerRuntime
from wan_studio.engine.generate import prediction_beside_measured
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.memory.manager import ModelManager, default_loader


def _request(width: int, seed: int, image: str | None = None) -> dict[str, Any]:
    return validate(GenerationRequest(prompt="a fox", model="demo", width=width, height=64, num_frames=5,
                                      steps=2, seed=seed, image=image)).to_dict()


def test_each_job_records_what_its_shapes_made_the_worker_compile(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    runtime = WorkerRuntime("w", RuntimeConfig(models_dir=str(tmp_path / "m"), outputs_dir=str(out)),
                            manager=ModelManager(default_loader(tmp_path / "m")))
    sent: list[dict[str, Any]] = []

    def run(job: str, request: dict[str, Any]) -> dict[str, Any]:
        runtime.run_job(job, request, threading.Event(), sent.append)
        assert sent[-1]["ev"] == "done", sent[-1]
        return json.loads(Path(sent[-1]["outputs"][1]).read_text(encoding="utf-8"))

    first = run("a", _request(64, 1))
    assert first["compile_needs"] == ["compile"] and first["model_was_loaded"] is False
    beside = first["predicted_vs_measured"]["compile_s"]
    assert beside[0] == first["plan"]["phases"]["compile_s"] and beside[1] is not None
    again = run("b", _request(64, 2))
    assert again["compile_needs"] == ["none"] and again["predicted_vs_measured"]["compile_s"] == [0.0, None]
    monkeypatch.setattr(job_path, "compiled", lambda pipe: True)  # as the GPU worker's compiled blocks
    wider = run("c", _request(128, 3))
    assert wider["compile_needs"] == ["recompile"]
    assert wider["predicted_vs_measured"]["compile_s"][0] == wider["plan"]["phases"]["recompile_s"]
    assert run("d", _request(192, 4))["compile_needs"] == ["none"]  # the third size: dynamic by now
    runtime.unload()
    assert run("e", _request(64, 5))["compile_needs"] == ["compile"]


def test_the_sidecar_prediction_adds_the_recompile_of_a_new_shape() -> None:
    plan = {"phases": {"compile_s": 13.5, "recompile_s": 4.9, "text_s": 0.3, "steps_s": 4.0, "decode_s": 15.0,
                       "write_s": 3.0, "load_s": 22.0}, "peak_vram_gib": {"cuda:0": 12.8}}
    timings = {"s_per_step": 1.8, "text_s": 0.34, "first_step_s": 7.2, "total_s": 28.0}
    new_shape = prediction_beside_measured(plan, timings, {"model_was_loaded": True,
                                                           "compile_needs": ["recompile"]}, 2)
    assert new_shape["compile_s"] == [4.9, round(7.2 - 0.34 - 1.8, 3)]
    assert new_shape["job_s"][0] == round(0.3 + 4.0 + 15.0 + 3.0 + 4.9, 3)
    assert new_shape["load_s"][0] == 0.0
    same = prediction_beside_measured(plan, timings, {"model_was_loaded": True, "compile_needs": ["none"]}, 2)
    assert same["compile_s"] == [0.0, None] and same["job_s"][0] == round(0.3 + 4.0 + 15.0 + 3.0, 3)
    # a sidecar of a path without a compile log: the compile counts on a worker that loaded the model
    cold = prediction_beside_measured(plan, timings, {"model_was_loaded": False}, 2)
    assert cold["compile_s"][0] == 13.5 and cold["load_s"][0] == 22.0
    assert "warmup_wait_s" not in cold
    # a cold worker that compiled beside its load: the sidecar shows the wait for the warm-up
    warmed = {**plan, "phases": {**plan["phases"], "load_s": 9.4, "compile_hidden_s": 8.2, "warmup_wait_s": 4.1}}
    beside = prediction_beside_measured(warmed, timings, {"model_was_loaded": False, "compile_needs": ["none"],
                                                          "compile_warmup": {"ran": True, "s": 14.0, "waited_s": 5.0}}, 2)
    assert beside["warmup_wait_s"] == [4.1, 5.0] and beside["compile_s"][0] == 0.0


def test_a_model_prepared_and_warmed_at_start_expects_no_compile_at_that_shape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wan_studio.engine import warmup

    monkeypatch.setattr(warmup, "run_throwaway", lambda *_a, **_k: True)  # the warm-up ran at its shape
    prepare = {"model": "demo", "width": 64, "height": 64, "num_frames": 5, "steps": 2}
    config = RuntimeConfig(models_dir=str(tmp_path / "m"), outputs_dir=str(tmp_path / "out"), prepare=prepare,
                           compile_warmup=True)
    runtime = WorkerRuntime("w", config, manager=ModelManager(default_loader(tmp_path / "m")))
    assert "compile warm-up" in (runtime.prepare() or "")
    sent: list[dict[str, Any]] = []
    runtime.run_job("a", _request(64, 1), threading.Event(), sent.append)
    assert sent[-1]["ev"] == "done", sent[-1]
    side = json.loads(Path(sent[-1]["outputs"][1]).read_text(encoding="utf-8"))
    assert side["model_was_loaded"] is True and side["compile_needs"] == ["none"]
