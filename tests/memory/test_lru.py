"""Least-recently-used eviction with a budget that holds most of what was used, so the order is
what decides: the model used last stays, the one left alone longest goes, whatever the order in
which they were first loaded. Components are full-size (meta tensors: bytes counted, none held)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from wan_studio.catalog.specs import TI2V_5B, ModelSpec
from wan_studio.memory import costs
from wan_studio.memory.manager import ModelManager
from wan_studio.memory.plan import Placement, Plan

GB = 10**9
# Three TI2V-5B fine-tunes: their own 10 GB transformers, one shared UMT5 encoder and Wan2.2 VAE.
A, B, C = (replace(TI2V_5B, key=f"ti2v-{name}") for name in ("a", "b", "c"))
SHARED = 11_360_000_000 + 2_820_000_000
# A 64 GB PC's cache: the shared parts and two transformers, not three.
BUDGET = SHARED + 2 * 10 * GB + GB


class MetaLoader:
    """Components with their real sizes on the meta device; pipelines are plain dicts."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        c = next(c for c in spec.components if c.name == name)
        dtype = torch.float32 if storage == "fp32" else torch.bfloat16
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.empty(c.params, dtype=dtype, device="meta"), requires_grad=False)
        self.loaded.append(f"{spec.key}/{name}")
        return module

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        return dict(modules)


def _plan(spec: ModelSpec) -> Plan:
    placements = tuple(Placement(c.name, "cpu", "fp32" if c.dtype == "fp32" else "bf16", "cpu")
                       for c in spec.components)
    return Plan(spec.key, "cpu", placements, vae_tiling=False, peak_vram=(), host_ram_bytes=0, step_s=0.0, job_s=0.0,
                relative_speed=1.0)


def _manager() -> tuple[ModelManager, MetaLoader]:
    loader = MetaLoader()
    return ModelManager(loader, budget_bytes=BUDGET, apply=lambda pipe, plan: None,
                        release=lambda pipe: None), loader


def _use(m: ModelManager, spec: ModelSpec) -> None:
    with m.use(spec, _plan(spec)):
        pass


def _transformers(m: ModelManager) -> list[str]:
    return [k[0] for k in m.cached() if k[0].endswith("/transformer")]


def test_the_budget_holds_two_of_the_three_transformers() -> None:
    assert costs.stored_bytes(A.components[0].params, "bf16") == 10 * GB
    m, _ = _manager()
    _use(m, A)
    _use(m, B)
    assert sum(m.cached().values()) == SHARED + 20 * GB <= BUDGET


def test_the_model_used_again_is_kept_and_the_one_left_longest_is_evicted() -> None:
    m, loader = _manager()
    _use(m, A)
    _use(m, B)
    _use(m, A)  # A is now the most recent, though it was loaded first
    _use(m, C)
    assert _transformers(m) == ["ti2v-a/transformer", "ti2v-c/transformer"]
    assert ("umt5-xxl", "bf16") in m.cached() and ("wan2.2-vae", "fp32") in m.cached()
    loader.loaded.clear()
    _use(m, A)
    assert loader.loaded == []  # A came from the cache: nothing read again


def test_without_reuse_the_first_loaded_goes_first() -> None:
    m, _ = _manager()
    for spec in (A, B, C):
        _use(m, spec)
    assert _transformers(m) == ["ti2v-b/transformer", "ti2v-c/transformer"]


def test_a_component_reused_through_another_model_counts_as_used() -> None:
    """The shared encoder, used by every model, is never the one evicted while a transformer
    left alone longer is there."""
    m, _ = _manager()
    _use(m, A)
    _use(m, B)
    _use(m, C)
    _use(m, B)
    _use(m, A)
    assert _transformers(m) == ["ti2v-b/transformer", "ti2v-a/transformer"]
    assert ("umt5-xxl", "bf16") in m.cached()


def test_room_for_a_part_is_made_at_the_bytes_of_its_storage_before_it_is_read() -> None:
    """A budget with 6 GB spare over A's parts: B's 10 GB bf16 transformer does not fit beside
    them, so A's transformer goes before B's is read, and host RAM never holds more than the
    budget (counting a bf16 part as fewer bytes would read it on top and overrun)."""
    budget = SHARED + 10 * GB + 6 * GB
    m = None
    peaks: list[tuple[str, int]] = []

    class Watching(MetaLoader):
        def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
            c = next(c for c in spec.components if c.name == name)
            peaks.append((f"{spec.key}/{name}", sum(m.cached().values()) + costs.component_bytes(c, storage)))
            return super().load(spec, name, storage)

    m = ModelManager(Watching(), budget_bytes=budget, apply=lambda pipe, plan: None, release=lambda pipe: None)
    _use(m, A)
    _use(m, B)
    assert _transformers(m) == ["ti2v-b/transformer"] and sum(m.cached().values()) == SHARED + 10 * GB
    assert [name for name, _ in peaks] == ["ti2v-a/transformer", "ti2v-a/text_encoder", "ti2v-a/vae",
                                           "ti2v-b/transformer"]
    assert all(peak <= budget for _, peak in peaks), peaks
