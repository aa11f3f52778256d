"""A cold worker compiles its transformer's blocks on a throwaway block while the weights load: the
real first step then compiles nothing (the tiny model on the CPU, dynamo's eager backend; the GPU
uses Inductor through the same dynamo cache). A warm-up that fails never fails the job."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from diffusers.hooks import apply_group_offloading
from torch._dynamo.utils import counters

from wan_studio.catalog.specs import get_spec
from wan_studio.cluster.runtime import RuntimeConfig, WorkerRuntime
from wan_studio.engine import warmup
from wan_studio.engine.accel import compile_below_hooks
from wan_studio.engine.generate import uniform_timestep
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.memory import costs
from wan_studio.memory.loaders import TinyLoader
from wan_studio.memory.manager import ModelManager, default_loader

SIZE = dict(width=64, height=64, num_frames=5)


def _pipe() -> Any:
    loader, spec = TinyLoader(), get_spec("demo")
    return loader.assemble(spec, {c.name: loader.load(spec, c.name, "bf16") for c in spec.components})


def _first_step_graphs(pipe: Any) -> int:
    """Graphs dynamo compiles during one text-to-video step of ``pipe``, run as a job runs it
    (``engine.generate``: the pipeline's no_grad inside inference mode, whose tensors lack the
    autograd dispatch keys dynamo guards on)."""
    counters.clear()
    with torch.inference_mode(), uniform_timestep(pipe) as _:
        pipe(prompt="a red fox", num_inference_steps=1, output_type="latent", **SIZE)
    return counters["stats"]["unique_graphs"]


def _warm(prepare: Callable[[Any], bool], pipe: Any) -> bool:
    spec = get_spec("demo")
    model_cls, config = TinyLoader().transformer_config(spec)  # type: ignore[misc]
    shapes = warmup.shapes_for(config, SIZE["width"], SIZE["height"], SIZE["num_frames"],
                               costs.arch(spec).spatial_down, per_token_timestep=False)
    return warmup.run_throwaway(model_cls, config, shapes, prepare, "cpu", next(pipe.transformer.parameters()).dtype)


def _compiled_whole(model: Any) -> bool:
    model.compile_repeated_blocks(backend="eager", fullgraph=True)
    return True


def test_after_the_warmup_the_first_step_compiles_nothing() -> None:
    torch._dynamo.reset()
    cold = _pipe()
    _compiled_whole(cold.transformer)
    assert _first_step_graphs(cold) >= 1  # without a warm-up the first step compiles

    torch._dynamo.reset()
    pipe = _pipe()
    _compiled_whole(pipe.transformer)
    assert _warm(_compiled_whole, pipe)
    assert _first_step_graphs(pipe) == 0


def test_blocks_compiled_below_offload_hooks_reuse_the_warmup() -> None:
    torch._dynamo.reset()
    pipe = _pipe()
    cpu = torch.device("cpu")
    apply_group_offloading(pipe.transformer, onload_device=cpu, offload_device=cpu, offload_type="block_level",
                           num_blocks_per_group=1)
    for block in pipe.transformer.blocks:
        compile_below_hooks(block, backend="eager")
    assert _warm(lambda m: warmup.compile_as_hooked(m, backend="eager") > 0, pipe)
    assert _first_step_graphs(pipe) == 0


def test_the_throwaway_has_the_dtypes_of_the_loaded_transformer(tmp_path: Path) -> None:
    # a dtype differing from the real model's is a guard failure: the first step would compile again
    from wan_studio.catalog.tiny import build_transformer

    build_transformer(48, 48).save_pretrained(tmp_path / "t")
    loaded = type(build_transformer(48, 48)).from_pretrained(tmp_path / "t", torch_dtype=torch.bfloat16)
    throwaway = warmup.typed_as_loaded(type(loaded).from_config(dict(loaded.config)), torch.bfloat16)
    dtypes = lambda m: {n: t.dtype for n, t in [*m.named_parameters(), *m.named_buffers()]}  # noqa: E731
    assert dtypes(throwaway) == dtypes(loaded)
    assert torch.float32 in dtypes(loaded).values() and torch.bfloat16 in dtypes(loaded).values()


def test_a_warmup_with_nothing_to_compile_runs_nothing() -> None:
    pipe = _pipe()
    assert _warm(lambda _m: False, pipe) is False


def _runtime(tmp_path: Path, **config: Any) -> WorkerRuntime:
    models = tmp_path / "m"
    return WorkerRuntime("w", RuntimeConfig(models_dir=str(models), outputs_dir=str(tmp_path / "out"), **config),
                         manager=ModelManager(default_loader(models)))


def _job(rt: WorkerRuntime, job_id: str) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    request = validate(GenerationRequest(prompt="a fox", steps=1, seed=1, **SIZE))
    rt.run_job(job_id, request.to_dict(), threading.Event(), sent.append)
    assert sent[-1]["ev"] == "done", sent[-1]
    return json.loads(Path(sent[-1]["outputs"][1]).read_text())


def test_a_failing_warmup_does_not_fail_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> bool:
        raise RuntimeError("no kernel for this block")

    monkeypatch.setattr(warmup, "run_throwaway", broken)
    side = _job(_runtime(tmp_path, compile_warmup=True), "j1")
    assert side["compile_warmup"]["ran"] is False
    assert "no kernel for this block" in side["compile_warmup"]["failed"]


def test_the_cold_job_warms_at_its_own_shapes_and_a_warm_job_does_not(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[warmup.WarmupShapes] = []

    def record(_cls: Any, _config: Any, shapes: warmup.WarmupShapes, *_a: Any) -> bool:
        seen.append(shapes)
        return True

    monkeypatch.setattr(warmup, "run_throwaway", record)
    rt = _runtime(tmp_path, compile_warmup=True)
    side = _job(rt, "j1")
    # 64×64×5 on the demo's Wan2.2 VAE: 48 latent channels, 2 latent frames of 4×4; text to video
    # runs with one timestep per sample
    assert seen == [warmup.WarmupShapes((48, 2, 4, 4), per_token_timestep=False)]
    assert side["compile_warmup"]["ran"] is True and side["model_was_loaded"] is False
    assert side["compile_needs"] == ["none"]  # the job's estimate counts no compile in its first step
    assert set(side["load_parts"]) == {"read_s", "place_s", "read_gib"}
    again = _job(rt, "j2")
    assert len(seen) == 1 and again["model_was_loaded"] is True
    assert "load_parts" not in again and "compile_warmup" not in again


def test_no_warmup_on_a_cpu_worker_unless_asked(tmp_path: Path) -> None:
    side = _job(_runtime(tmp_path), "j1")
    assert "compile_warmup" not in side and side["load_parts"]["read_s"] >= 0


def test_the_warmup_builds_real_weights_while_another_thread_loads_on_meta() -> None:
    """The real weights load meanwhile, through accelerate's ``init_empty_weights``, which makes every
    new parameter of the process a meta tensor while it is entered (on a GPU, T2V-A14B's warm-up failed
    with "Tensor on device meta is not on the expected device cuda:0!"). The throwaway still runs
    with real weights, and the first step then compiles nothing."""
    from accelerate import init_empty_weights

    pipe = _pipe()
    seen: list[str] = []

    def prepare(model: Any) -> bool:
        seen.extend(sorted({p.device.type for p in model.parameters()}))
        return _compiled_whole(model)

    with init_empty_weights():  # as a loading thread holds it during the warm-up
        assert _warm(prepare, pipe)
    assert seen == ["cpu"]
    pipe.transformer.compile_repeated_blocks(backend="eager", fullgraph=True)
    assert _first_step_graphs(pipe) == 0


def test_while_a_warmup_traces_the_loading_thread_gets_the_gil_back_within_short_turns() -> None:
    # Beside a busy tracing thread, each torch call of the loader waited up to a 5 ms GIL turn:
    # page-locking a TI2V-5B took 12.9 s instead of ~5 (bench/pin_rate.py). Short turns while a
    # warm-up runs; the interval the process had comes back after, also after two queued ones.
    import sys
    import threading

    from wan_studio.engine.warmup import WARMUP_SWITCH_INTERVAL_S, CompileWarmup

    before = sys.getswitchinterval()
    assert before > WARMUP_SWITCH_INTERVAL_S
    seen: list[float] = []
    release = threading.Event()

    def work() -> bool:
        seen.append(sys.getswitchinterval())
        assert release.wait(30)
        return True

    # the second waits for the first's turn (ATTENTION_TURN), counted in from its start
    first, second = CompileWarmup(work).start(), CompileWarmup(work).start()
    deadline = time.monotonic() + 30
    while not seen:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(seen) == 1
    release.set()
    assert first.wait()["ran"] and second.wait()["ran"]
    assert seen == pytest.approx([WARMUP_SWITCH_INTERVAL_S] * 2)
    assert sys.getswitchinterval() == before


def test_a_gpu_worker_starts_inductors_compile_processes_at_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.async_compile as async_compile

    calls: list[int] = []
    monkeypatch.setattr(async_compile, "maybe_warm_pool", lambda: calls.append(1))
    assert warmup.start_compile_pool("cuda:0", {"compile": "auto"}, None) and calls == [1]
    # nothing to compile there: a CPU worker, compile switched off, warm-ups switched off
    assert not warmup.start_compile_pool("cpu", {"compile": "auto"}, None)
    assert not warmup.start_compile_pool("cuda:0", {"compile": "off"}, None)
    assert not warmup.start_compile_pool("cuda:0", {}, False)
    assert calls == [1]
    # a pool that fails to start leaves Inductor to start it later, as before
    monkeypatch.setattr(async_compile, "maybe_warm_pool", lambda: (_ for _ in ()).throw(OSError("no fork")))
    assert not warmup.start_compile_pool("cuda:0", {}, None)


def test_a_job_beside_another_warmup_finds_every_attention_kernel(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm-up of another plan (the worker's preparation) narrows PyTorch's process-wide
    attention flags while it runs; a job starting then must not run its text encoder under them,
    and no two narrowings may interleave (each restores what it found: the flags stayed narrowed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    narrowed = threading.Event()

    def fused_only(hold_s: float) -> Callable[[], bool]:
        def work() -> bool:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):  # what a `_native_cudnn` transformer does
                narrowed.set()
                time.sleep(hold_s)
            return True
        return work

    def own_warmup(*_a: Any) -> bool:
        return fused_only(0.3)()

    monkeypatch.setattr(warmup, "run_throwaway", own_warmup)
    rt = _runtime(tmp_path, compile_warmup=True)
    other = warmup.CompileWarmup(fused_only(1.5)).start()
    assert narrowed.wait(10)
    side = _job(rt, "j1")  # UMT5's attention through PyTorch SDPA: fails with no kernel beside it
    assert other.wait()["ran"] is True and side["compile_warmup"]["ran"] is True
    # it waited for the other one (through its own warm-up, which took its turn after it)
    assert side["compile_warmup"]["waited_s"] + side.get("waited_for_other_warmup_s", 0) > 0.5
    assert torch.backends.cuda.math_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()


def test_a_loads_attention_check_beside_a_warmup_leaves_every_attention_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread placing a model's weights checks its fused attention kernel (``apply_speed``)
    while a compile warm-up may be running attention: the two narrow PyTorch's process-wide flags
    in turn, so neither leaves them narrowed (a fresh app's first jobs all failed with "No
    available kernel" in the text encoder)."""
    from types import SimpleNamespace

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from tests.engine.test_accel import on_a_hopper_gpu_with_cudnn
    from wan_studio.catalog.tiny import build_transformer
    from wan_studio.engine import accel

    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    on_a_hopper_gpu_with_cudnn(monkeypatch)
    # diffusers' set_attention_backend also sets its process-wide default: the later tests' CPU
    # pipelines must find it as it was
    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    started, checking = threading.Event(), threading.Event()

    def check(*_a: Any, **_k: Any) -> float:  # as the real check: exact attention on the math kernel
        checking.set()
        with sdpa_kernel(SDPBackend.MATH):
            q = torch.randn(1, 2, 8, 16)
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
            time.sleep(0.5)
        return 2.3e-3

    def warm() -> bool:  # a `_native_cudnn` block compiled at the job's shapes
        started.set()
        checking.wait(1.0)  # beside the check, where both narrow the flags at once
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            time.sleep(0.6)
        return True

    monkeypatch.setattr(accel, "attention_error", check)
    pipe = SimpleNamespace(transformer=build_transformer(48, 48).to(torch.bfloat16))
    other = warmup.CompileWarmup(warm).start()
    assert started.wait(10)
    record = accel.apply_speed(pipe, {"model_offload"}, "bf16", accel.SpeedOptions(compile="off"))
    assert other.wait()["ran"] is True
    assert all(on() for on in (torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.flash_sdp_enabled,
                               torch.backends.cuda.mem_efficient_sdp_enabled, torch.backends.cuda.cudnn_sdp_enabled))
    assert record["attention"] == "cudnn" and record["attention_check_waited_s"] > 0.5

    # a warm-up's own set-up runs the same check on the thread holding the turn
    def own() -> None:
        with warmup.ATTENTION_TURN:
            accel.apply_speed(pipe, {"model_offload"}, "bf16", accel.SpeedOptions(compile="off"))

    inner = threading.Thread(target=own, daemon=True)
    inner.start()
    inner.join(10)
    assert not inner.is_alive()
