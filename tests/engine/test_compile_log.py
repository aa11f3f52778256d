"""A worker's compile log says what a job will compile, as torch._dynamo does: the model's first run
compiles, a compiled model's second size recompiles, later sizes run the dynamic graph, the other
timestep kind (TI2V from an image) recompiles once, a model loaded afresh starts over. The
sequences of the GPU runs (tests/data/gpu_measured.json) are replayed in tests/memory/test_measured_fit.py."""

from __future__ import annotations

from types import SimpleNamespace

from wan_studio.engine.compile_log import CompileLog, RunShape, job_shapes

P720 = RunShape(1280, 704, 121)
P720_10S = RunShape(1280, 704, 241)
P1080 = RunShape(1920, 1088, 121)
P720_IMAGE = RunShape(1280, 704, 121, per_token_timestep=True)


def test_first_run_compiles_then_a_second_size_recompiles_and_a_third_does_not() -> None:
    log = CompileLog()
    assert log.needs("ti2v-5b", [P720], compiled=True) == ["compile"]
    log.ran("ti2v-5b", [P720])
    assert log.needs("ti2v-5b", [P720], compiled=True) == ["none"]
    assert log.needs("ti2v-5b", [P720_10S], compiled=True) == ["recompile"]
    log.ran("ti2v-5b", [P720_10S])
    assert log.needs("ti2v-5b", [P1080], compiled=True) == ["none"]  # sizes are symbolic by now
    assert log.needs("ti2v-5b", [P720_IMAGE], compiled=True) == ["recompile"]  # a graph of its own
    assert log.needs("t2v-a14b", [P720], compiled=True) == ["compile"]  # per model


def test_an_eager_model_compiles_nothing_after_its_first_call() -> None:
    log = CompileLog()
    log.ran("s2v-14b", [P720])
    assert log.needs("s2v-14b", [P720_10S], compiled=False) == ["none"]


def test_a_model_loaded_afresh_compiles_from_the_start() -> None:
    log = CompileLog()
    log.ran("ti2v-5b", [P720])
    log.forget("ti2v-5b")
    assert log.needs("ti2v-5b", [P720], compiled=True) == ["compile"]


def test_a_long_clips_later_windows_count_as_the_image_kind_after_its_first() -> None:
    text = SimpleNamespace(width=1280, height=704, num_frames=121, image=None, total_frames=241)
    assert job_shapes(text, per_token_timestep_model=True) == [P720, P720_IMAGE]
    assert job_shapes(text, per_token_timestep_model=False) == [P720]  # no per-token timestep in A14B
    one = SimpleNamespace(width=1280, height=704, num_frames=121, image="a.png", total_frames=None)
    assert job_shapes(one, per_token_timestep_model=True) == [P720_IMAGE]
    log = CompileLog()
    assert log.needs("ti2v-5b", job_shapes(text, True), compiled=True) == ["compile", "recompile"]
