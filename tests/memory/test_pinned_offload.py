"""Model offload with pinned host copies: one component on the GPU at a time, nothing copied off."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.memory.helpers import cpu_plan, run_frames
from tests.memory.test_apply import tiny_pipe
from wan_studio.catalog.specs import TI2V_5B
from wan_studio.memory.apply import apply_plan, release_pipeline
from wan_studio.memory.pinned_offload import enable_pinned_offload


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
