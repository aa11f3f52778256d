"""Model offload with pinned host copies: one component on the GPU at a time, nothing copied off."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from tests.memory.helpers import cpu_plan, run_frames
from tests.memory.test_apply import tiny_pipe
from wan_studio.catalog.specs import TI2V_5B
from wan_studio.memory.apply import apply_plan, release_pipeline
from wan_studio.memory.pinned_offload import _HostMemory, enable_pinned_offload


def test_only_the_running_component_is_onloaded_and_offloading_copies_nothing() -> None:
    pipe = tiny_pipe(TI2V_5B)
    reference = run_frames(pipe, TI2V_5B)
    hooks = {type(pipe.components[n]).__name__: h for n, h in zip(
        [n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)], enable_pinned_offload(pipe, "cpu"))}
    held: list[list[str]] = []
    for module in (pipe.text_encoder, pipe.transformer, pipe.vae.decoder):  # decode() skips vae.forward
        module.register_forward_hook(lambda *_: held.append(sorted(k for k, h in hooks.items() if h.on_gpu)))
    frames = run_frames(pipe, TI2V_5B)
    assert np.array_equal(frames, reference)
    # each component ran holding the one seat alone (hooks run after forward), and all three took a turn
    assert all(len(h) == 1 for h in held) and {h[0] for h in held} == set(hooks)
    # after the job the weights of every component that is not seated are exactly their host copies
    for hook in hooks.values():
        if not hook.on_gpu:
            assert all(t.data.data_ptr() == host.data_ptr() for t, host in hook.host.values())


def test_tensors_added_after_hooking_are_moved_too_and_release_removes_the_hooks() -> None:
    pipe = tiny_pipe(TI2V_5B)
    hooks = enable_pinned_offload(pipe, "cpu")
    block = pipe.transformer.blocks[0]
    block.register_buffer("late_extra", torch.ones(3))  # as a LoRA layer loaded into a placed model
    run_frames(pipe, TI2V_5B)
    hook = next(h for h in hooks if h.module is pipe.transformer)
    assert any(t is block.late_extra for t, _ in hook.host.values())
    release_pipeline(pipe)
    assert not hasattr(pipe.transformer, "_hf_hook") and not hasattr(pipe.vae, "_hf_hook")


def test_model_offload_plan_gives_the_same_frames_as_everything_resident() -> None:
    pipe = tiny_pipe(TI2V_5B)
    reference = run_frames(pipe, TI2V_5B)
    apply_plan(pipe, cpu_plan(TI2V_5B, offload="model_offload"))
    assert type(pipe.transformer._hf_hook).__name__ == "PinnedOffloadHook"
    assert np.array_equal(run_frames(pipe, TI2V_5B), reference)


def test_host_copies_are_packed_into_whole_slabs_and_stop_pinning_at_the_budget(monkeypatch) -> None:
    # PyTorch rounds each pinned allocation up to a power of two; packing keeps the host memory of
    # the copies at their own size (the A14B experts took ~1.6x their size when pinned one by one).
    import wan_studio.memory.pinned_offload as po

    allocations: list[int] = []
    monkeypatch.setattr(po.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(po, "_alloc_pinned", lambda n: allocations.append(n) or torch.empty(n, dtype=torch.uint8))
    monkeypatch.setattr(po, "SLAB_BYTES", 4096)
    memory = po._HostMemory(budget_bytes=2 * 4096 + 100)
    weights = [torch.randn(300, dtype=torch.float32), torch.randn(10, 20).to(torch.bfloat16),
               torch.arange(563, dtype=torch.int64), torch.randn(900)]  # 1200 + 400 + 4504 + 3600 bytes
    copies = [memory.copy(w) for w in weights]
    for w, c in zip(weights, copies):
        assert c.dtype == w.dtype and c.shape == w.shape and torch.equal(c, w)
    # two whole slabs; the 4504-byte tensor is over a slab and would round up to 8192: left unpinned
    assert allocations == [4096, 4096]
    assert copies[2].data_ptr() == weights[2].data_ptr()
    assert memory.pinned_bytes == 2 * 4096 <= memory.budget
    memory.copy(torch.randn(1000))  # the third slab would pass the budget: ordinary memory
    assert len(allocations) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_one_component_at_a_time_from_pinned_memory() -> None:
    pipe = tiny_pipe(TI2V_5B)
    reference = run_frames(pipe, TI2V_5B)
    hooks = enable_pinned_offload(pipe, "cuda:0")
    assert all(host.is_pinned() for h in hooks for _, host in h.host.values())
    lazy = tiny_pipe(TI2V_5B)
    lazy_hooks = enable_pinned_offload(lazy, "cuda:0", lazy=True)
    assert not any(host.is_pinned() for h in lazy_hooks for _, host in h.host.values())
    assert lazy_hooks[0].seat.pinner.start().wait(60)["done"]
    assert all(host.is_pinned() and t.data.is_pinned() for h in lazy_hooks for t, host in h.host.values())
    weight_bytes = sum(host.numel() * host.element_size() for h in hooks for _, host in h.host.values())
    from wan_studio.memory.pinned_offload import SLAB_BYTES

    assert hooks[0].seat.memory.pinned_bytes <= weight_bytes + SLAB_BYTES
    devices: list[set[str]] = []
    for module in (pipe.text_encoder, pipe.transformer, pipe.vae.decoder):  # decode() skips vae.forward
        module.register_forward_hook(lambda *_: devices.append(
            {n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)
             and next(m.parameters()).device.type == "cuda"}))
    frames = run_frames(pipe, TI2V_5B)
    assert all(len(d) == 1 for d in devices) and len({next(iter(d)) for d in devices}) == 3
    assert np.abs(frames.astype(int) - reference.astype(int)).max() <= 2


def test_a_streamed_transformer_empties_the_seat_before_it_runs_and_the_frames_stay_the_same() -> None:
    # Block offload for the experts, model offload for the text encoder and VAE: the text encoder
    # seated for the prompt must leave before denoising, or its weights sit beside the streamed
    # expert's for the whole job (the planner counts it in its own phase only).
    from dataclasses import replace

    from wan_studio.catalog.specs import T2V_A14B
    from wan_studio.memory.plan import TRANSFORMERS

    pipe = tiny_pipe(T2V_A14B)
    reference = run_frames(pipe, T2V_A14B)
    plan = cpu_plan(T2V_A14B)
    plan = replace(plan, placements=tuple(
        replace(p, offload="group_offload" if p.component in TRANSFORMERS else "model_offload")
        for p in plan.placements))
    apply_plan(pipe, plan)
    hooks = {name: getattr(pipe, name)._hf_hook for name in ("text_encoder", "vae")}
    assert all(type(h).__name__ == "PinnedOffloadHook" for h in hooks.values())
    seated: dict[str, list[list[str]]] = {"text_encoder": [], "experts": []}

    def record(where: str) -> Any:
        return lambda *_: seated[where].append(sorted(n for n, h in hooks.items() if h.on_gpu))

    pipe.text_encoder.register_forward_hook(record("text_encoder"))
    for expert in (pipe.transformer, pipe.transformer_2):
        expert.blocks[0].register_forward_hook(record("experts"))
    frames = run_frames(pipe, T2V_A14B)
    np.testing.assert_array_equal(frames, reference)
    assert seated["text_encoder"] and all(s == ["text_encoder"] for s in seated["text_encoder"])
    assert seated["experts"] and all(s == [] for s in seated["experts"])
    release_pipeline(pipe)
    assert not any(hasattr(m, "_wan_seat_evict") for m in (pipe.transformer, pipe.transformer_2))
    np.testing.assert_array_equal(run_frames(pipe, T2V_A14B), reference)


class _FakePinned(_HostMemory):
    """Host memory whose "pinned" copies are clones it remembers, with a gate a test can close
    after ``open_for`` copies (CPU: nothing can be page-locked here)."""

    def __init__(self, open_for: int | None = None) -> None:
        super().__init__(budget_bytes=1 << 40)
        self.made: list[torch.Tensor] = []
        self.open_for = open_for
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        if self.open_for is not None and len(self.made) >= self.open_for and not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(60)
        c = t.detach().clone()
        self.made.append(c)
        return c

    def holds(self, t: torch.Tensor) -> bool:
        return any(t.data_ptr() == m.data_ptr() for m in self.made)


def _weights(pipe: Any) -> dict[str, list[torch.Tensor]]:
    return {n: [*m.parameters(), *m.buffers()] for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def test_lazy_copies_are_pinned_after_placement_in_the_order_a_job_uses_them() -> None:
    pipe = tiny_pipe(TI2V_5B)
    reference = run_frames(pipe, TI2V_5B)
    before = {n: [t.data_ptr() for t in ts] for n, ts in _weights(pipe).items()}
    memory = _FakePinned()
    hooks = enable_pinned_offload(pipe, "cpu", memory=memory, lazy=True)
    # placing copied nothing: every weight still lives where the load left it
    assert memory.made == [] and {n: [t.data_ptr() for t in ts] for n, ts in _weights(pipe).items()} == before
    pinner = hooks[0].seat.pinner
    order: list[str] = []
    for name, module in pipe.components.items():
        hook = getattr(module, "_hf_hook", None)
        if hook is not None:
            original = hook.pin_copies
            hook.pin_copies = lambda stop=None, _n=name, _f=original: order.append(_n) or _f(stop)
    record = pinner.start().wait(60)
    assert order == ["text_encoder", "transformer", "vae"]
    total = sum(t.numel() * t.element_size() for h in hooks for t, _ in h.host.values())
    assert record["done"] and record["pinned_bytes"] == total
    # every weight now is its pinned copy (none is seated), and the video is the same
    assert all(memory.holds(t.data) and t.data.data_ptr() == host.data_ptr() for h in hooks for t, host in h.host.values())
    assert np.array_equal(run_frames(pipe, TI2V_5B), reference)
    assert len(memory.made) == len([1 for h in hooks for _ in h.host])  # each weight copied once


def test_a_job_during_the_pinning_runs_from_the_loads_memory_and_release_stops_it() -> None:
    pipe = tiny_pipe(TI2V_5B)
    reference = run_frames(pipe, TI2V_5B)
    memory = _FakePinned(open_for=3)
    hooks = enable_pinned_offload(pipe, "cpu", memory=memory, lazy=True)
    pinner = hooks[0].seat.pinner.start()
    assert memory.waiting.wait(60)  # three weights pinned, the pinner held before the fourth
    assert np.array_equal(run_frames(pipe, TI2V_5B), reference)
    memory.gate.set()
    assert pinner.wait(60)["done"]
    assert np.array_equal(run_frames(pipe, TI2V_5B), reference)
    # taken off while it pins: the pinner stops and the weights stay usable on the CPU
    pipe2 = tiny_pipe(TI2V_5B)
    memory2 = _FakePinned(open_for=2)
    pinner2 = enable_pinned_offload(pipe2, "cpu", memory=memory2, lazy=True)[0].seat.pinner.start()
    assert memory2.waiting.wait(60)
    release_pipeline(pipe2)
    memory2.gate.set()
    record = pinner2.wait(60)
    assert not record["done"] and len(memory2.made) <= 3
    assert np.array_equal(run_frames(pipe2, TI2V_5B), reference)
