"""The one place that holds models: a session cache of *components*, assembled into pipelines.

Identical components are held once and shared (the UMT5 encoder by all four models, the Wan2.1
VAE by A14B and S2V): a component is keyed by its share key (or model/name) and storage dtype.
A pipeline is a set of cached components placed by a ``Plan``; it stays assembled until another
pipeline needs one of its components or its GPU, then it is released (hooks removed, weights back
in RAM) and the components stay cached for the next assembly.

Invariants (all guarded by one condition variable):
- a component or pipeline with a lock count above zero is never released or evicted;
- a component belongs to at most one assembled pipeline (diffusers' hooks live on the module);
- a failed load or placement leaves no entry behind: new components are dropped, shared ones
  are released back to RAM.
Eviction is least-recently-used over the components, against a host-RAM budget in bytes.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory import costs
from wan_studio.memory.apply import apply_plan, release_component, release_pipeline
from wan_studio.memory.plan import Plan

ComponentKey = tuple[str, str]


class ComponentLoader(Protocol):
    """Reads components and builds pipelines around them (see ``memory.loaders``)."""

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        """One component of ``spec`` with its weights stored as ``storage``, on the CPU."""

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        """A pipeline of ``spec`` around the given components (adds tokenizer and scheduler)."""


@dataclass
class ComponentRecord:
    """One cached component: its module, its size in bytes, who holds it."""

    key: ComponentKey
    module: Any
    nbytes: int
    locks: int = 0
    owner: str | None = None


@dataclass
class PipelineRecord:
    """An assembled, placed pipeline and the component keys it is made of."""

    spec: ModelSpec
    plan: Plan
    pipe: Any
    parts: dict[str, ComponentKey] = field(default_factory=dict)
    locks: int = 0


class WholePipelineLoader:
    """Component interface over a loader that only builds whole pipelines: the speech-to-video
    model (our own pipeline class, read from the official checkpoint) and tests that hand the
    manager a ready pipeline (``loader(spec) -> pipe`` or ``-> (pipe, placement)``).

    ``load`` builds the pipeline once per assembly and hands out its parts; ``assemble`` rebuilds
    the pipeline class around whichever parts the cache holds, with the non-module parts
    (tokenizer, scheduler, feature extractor) kept from the first build.
    """

    def __init__(self, load_pipeline: Callable[[ModelSpec], Any]) -> None:
        self._load_pipeline = load_pipeline
        self._pending: dict[str, Any] = {}
        self._shells: dict[str, tuple[type, dict[str, Any]]] = {}

    def _build(self, spec: ModelSpec) -> Any:
        built = self._load_pipeline(spec)
        pipe = built[0] if isinstance(built, tuple) else built
        import torch

        rest = {k: v for k, v in pipe.components.items() if not isinstance(v, torch.nn.Module)}
        self._shells[spec.key] = (type(pipe), rest)
        return pipe

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        """Part ``name`` of a freshly built pipeline of ``spec``, stored as ``storage``."""
        from wan_studio.memory.apply import apply_storage

        if spec.key not in self._pending:
            self._pending[spec.key] = self._build(spec)
        module = getattr(self._pending[spec.key], name)
        apply_storage(module, storage)
        return module

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        """The pipeline class of ``spec`` around ``modules``."""
        self._pending.pop(spec.key, None)  # its unused parts go; the cache holds the rest
        if spec.key not in self._shells:
            self._build(spec)
        cls, rest = self._shells[spec.key]
        pipe = cls(**rest, **modules)
        pipe.set_progress_bar_config(disable=True)
        return pipe


@dataclass
class LoadStatus:
    """How far an assembly of one model has come: bytes of its components read from disk so far
    out of those it had to read, then ``placing`` (pinning, moving to the GPU, hooks)."""

    model: str  # the model's short title, e.g. "Wan2.2 TI2V-5B"
    total_bytes: int
    done_bytes: int = 0
    stage: str = "loading"

    def describe(self) -> str:
        """One line for a job's status, e.g. ``loading Wan2.2 TI2V-5B 46 %``."""
        if self.stage == "placing":
            return f"placing {self.model} for this job (pinning, moving to the GPU)"
        share = self.done_bytes / self.total_bytes if self.total_bytes else 1.0
        return f"loading {self.model} {100 * share:.0f} %"


class ManagerError(RuntimeError):
    """A request the manager cannot serve (e.g. a nested use that would wait on itself)."""


def component_key(spec: ModelSpec, name: str, plan: Plan, shared: str | None = None) -> ComponentKey:
    """Cache key of component ``name`` of ``spec`` under ``plan``: identity and storage dtype.

    ``shared`` names a copy other models may use too (the loader's format knows when two models
    read identical bytes: the Diffusers releases' UMT5, one ComfyUI file for every model)."""
    c = next(c for c in spec.components if c.name == name)
    placement = plan.placement(name)
    storage = placement.storage if placement else c.dtype
    return (shared or f"{spec.key}/{name}", storage)


def default_share_key(spec: ModelSpec, name: str) -> str | None:
    """For loaders that do not say: the catalog's share key for diffusers models (the releases ship
    byte-identical UMT5 and Wan2.1 VAE files); our own S2V pipeline reads its own copies."""
    c = next(c for c in spec.components if c.name == name)
    return c.share_key if spec.diffusers_layout else None


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (0 for non-modules)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelManager:
    """Session cache of components with LRU eviction, lock counts and per-plan assembly.

    ``budget_bytes`` bounds the bytes of cached components (host RAM); ``default_plan`` gives a
    plan when a caller passes none; ``apply`` / ``release`` place and un-place a pipeline.
    """

    def __init__(self, loader: ComponentLoader | Callable[[ModelSpec], tuple[Any, str]],
                 budget_bytes: int | None = None, default_plan: Callable[[ModelSpec], Plan] | None = None,
                 apply: Callable[[Any, Plan], None] = apply_plan,
                 release: Callable[[Any], None] = release_pipeline) -> None:
        self._loader: ComponentLoader = loader if hasattr(loader, "assemble") else WholePipelineLoader(loader)
        self._budget = budget_bytes
        self._default_plan = default_plan
        self._apply, self._release = apply, release
        self._components: OrderedDict[ComponentKey, ComponentRecord] = OrderedDict()
        self._pipelines: dict[str, PipelineRecord] = {}
        self._loading: set[ComponentKey] = set()
        self._cond = threading.Condition(threading.RLock())
        self._model_locks: dict[str, threading.Lock] = {}
        self._held = threading.local()
        self._status: dict[str, LoadStatus] = {}  # model key -> its assembly under way
        self.loads = 0  # components read from disk or built, for tests and telemetry

    @contextmanager
    def use(self, spec: ModelSpec, plan: Plan | None = None) -> Iterator[Any]:
        """Borrow the pipeline of ``spec`` placed by ``plan``; it stays locked inside the block.

        One caller holds a pipeline at a time; another caller of the same model waits.
        """
        if plan is None:
            plan = (self._default_plan or default_plan)(spec)
        held: set[str] = getattr(self._held, "models", set())
        if held:
            raise ManagerError(f"this thread already holds {sorted(held)}; release it before using {spec.key}")
        record = self._acquire(spec, plan)
        self._held.models = {spec.key}
        try:
            yield record.pipe
        finally:
            self._held.models = set()
            with self._cond:
                record.locks -= 1
                for key in record.parts.values():
                    self._components[key].locks -= 1
                self._cond.notify_all()

    def _acquire(self, spec: ModelSpec, plan: Plan) -> PipelineRecord:
        with self._cond:
            model_lock = self._model_locks.setdefault(spec.key, threading.Lock())
        with model_lock:
            with self._cond:
                current = self._pipelines.get(spec.key)
                if current is not None:
                    # A diffusers pipeline holds per-call state (scheduler, guidance): one holder
                    # at a time; the next waits here, outside the other models' way.
                    self._cond.wait_for(lambda: current.locks == 0)
                    if current.plan.placements == plan.placements and self._pipelines.get(spec.key) is current:
                        self._lock_record(current)
                        return current
                    if self._pipelines.get(spec.key) is current:
                        self._dissolve(spec.key)
            return self._assemble(spec, plan)

    def _lock_record(self, record: PipelineRecord) -> None:
        record.locks += 1
        for key in record.parts.values():
            self._components[key].locks += 1
            self._components.move_to_end(key)

    def transformer_config(self, spec: ModelSpec) -> tuple[type, dict[str, Any]] | None:
        """The class and configuration of ``spec``'s transformer, read without its weights, when
        the loader can say (None otherwise)."""
        read = getattr(self._loader, "transformer_config", None)
        return read(spec) if read is not None else None

    def status(self, model: str) -> LoadStatus | None:
        """How far the assembly of ``model`` (a key) under way has come; None when none is."""
        with self._cond:
            return self._status.get(model)

    def _assemble(self, spec: ModelSpec, plan: Plan) -> PipelineRecord:
        share = getattr(self._loader, "share_key", default_share_key)
        parts = {c.name: component_key(spec, c.name, plan, share(spec, c.name)) for c in spec.components}
        fresh: list[ComponentKey] = []
        taken: list[ComponentKey] = []
        with self._cond:
            todo = {key: self._predicted_bytes(spec, name, key[1]) for name, key in parts.items()
                    if key not in self._components}
            status = self._status[spec.key] = LoadStatus(spec.title.split(" (")[0], sum(todo.values()))
        try:
            t_read = time.perf_counter()
            for name, key in sorted(parts.items(), key=lambda item: item[1]):
                if self._take(spec, name, key):
                    fresh.append(key)
                taken.append(key)
                status.done_bytes += todo.get(key, 0)
            with self._cond:
                self._make_room_on_gpu(plan)
                modules = {n: self._components[k].module for n, k in parts.items()}
            status.stage = "placing"
            t_place = time.perf_counter()
            pipe = self._loader.assemble(spec, modules)
            try:
                self._apply(pipe, plan)
            except BaseException:
                self._release(pipe)
                raise
            _note_assembly(pipe, t_place - t_read, time.perf_counter() - t_place, status.total_bytes)
        except BaseException:
            with self._cond:
                self._status.pop(spec.key, None)
                for key in taken:
                    self._components[key].locks -= 1
                for key in fresh:
                    self._drop_component(key)
                self._cond.notify_all()
            raise
        record = PipelineRecord(spec, plan, pipe, parts, locks=1)
        with self._cond:
            self._status.pop(spec.key, None)
            self._pipelines[spec.key] = record
            for key in parts.values():
                self._components[key].owner = spec.key
        return record

    def _take(self, spec: ModelSpec, name: str, key: ComponentKey) -> bool:
        """Lock component ``key`` for an assembly, loading it if needed; True when loaded now.

        A component joins one assembly at a time: wait until nobody holds it, then release the
        idle pipeline that owns it. Callers take keys in sorted order, so two assemblies that
        need the same shared components cannot wait on each other in a cycle.
        """
        with self._cond:
            self._cond.wait_for(lambda: key not in self._loading and
                                (key not in self._components or self._components[key].locks == 0))
            rec = self._components.get(key)
            if rec is not None:
                if rec.owner is not None and rec.owner != spec.key and rec.owner in self._pipelines:
                    self._dissolve(rec.owner)
                rec.locks += 1
                self._components.move_to_end(key)
                return False
            self._loading.add(key)
            self._evict_for(self._predicted_bytes(spec, name, key[1]))
        try:
            module = self._loader.load(spec, name, key[1])
        except BaseException:
            with self._cond:
                self._loading.discard(key)
                self._cond.notify_all()
            raise
        with self._cond:
            self._loading.discard(key)
            self._components[key] = ComponentRecord(key, module, module_bytes(module), locks=1)
            self.loads += 1
            self._cond.notify_all()
        return True

    @staticmethod
    def _predicted_bytes(spec: ModelSpec, name: str, storage: str) -> int:
        c = next(c for c in spec.components if c.name == name)
        return costs.component_bytes(c, storage)

    def _evict_for(self, incoming: int) -> None:
        """Drop least recently used unlocked components until ``incoming`` more bytes fit."""
        if self._budget is None:
            return
        for key in list(self._components):
            if sum(r.nbytes for r in self._components.values()) + incoming <= self._budget:
                return
            rec = self._components[key]
            if rec.locks == 0:
                if rec.owner is not None:
                    self._dissolve(rec.owner)
                self._drop_component(key)

    def _make_room_on_gpu(self, plan: Plan) -> None:
        """Release unlocked pipelines placed on any GPU the new plan uses (their weights go back
        to RAM), so the new plan gets the memory the planner counted on."""
        wanted = set(plan.devices)
        for model, rec in list(self._pipelines.items()):
            if rec.locks == 0 and wanted & set(rec.plan.devices):
                self._dissolve(model)

    def _dissolve(self, model: str) -> None:
        """Un-place pipeline ``model``; its components stay cached, unowned."""
        rec = self._pipelines.pop(model)
        self._release(rec.pipe)
        for key in rec.parts.values():
            comp = self._components.get(key)
            if comp is not None and comp.owner == model:
                comp.owner = None
        del rec
        _free_memory()

    def _drop_component(self, key: ComponentKey) -> None:
        rec = self._components.pop(key, None)
        if rec is None:
            return
        try:
            release_component(rec.module)
        except Exception:  # the module is being dropped anyway; nothing to keep consistent
            pass
        del rec
        _free_memory()

    def loaded(self) -> dict[str, str]:
        """Model key → label of the plan it is placed with, for every assembled pipeline."""
        with self._cond:
            return {k: r.plan.label for k, r in self._pipelines.items()}

    def cached(self) -> dict[ComponentKey, int]:
        """Component key → bytes, least recently used first."""
        with self._cond:
            return {k: r.nbytes for k, r in self._components.items()}

    def unload(self, model: str) -> list[ComponentKey]:
        """Drop the components of ``model`` that no other model shares and nobody holds."""
        with self._cond:
            rec = self._pipelines.get(model)
            if rec is not None and rec.locks:
                return []
            if rec is not None:
                self._dissolve(model)
            mine = [k for k in self._components if k[0].startswith(f"{model}/")]
            dropped = [k for k in mine if self._components[k].locks == 0]
            for key in dropped:
                self._drop_component(key)
            return dropped

    def unload_all(self) -> list[ComponentKey]:
        """Drop every component nobody holds (pipelines in use stay); return the keys dropped."""
        with self._cond:
            for model, rec in list(self._pipelines.items()):
                if rec.locks == 0:
                    self._dissolve(model)
            dropped = [k for k, r in self._components.items() if r.locks == 0]
            for key in dropped:
                self._drop_component(key)
            return dropped


ASSEMBLY_ATTR = "wan_load"


def _note_assembly(pipe: Any, read_s: float, place_s: float, read_bytes: int) -> None:
    """Keep how the pipeline's assembly went on it (``ASSEMBLY_ATTR``): seconds reading (or
    building) the components it lacked and placing them (pinning the offloaded ones, moving the rest
    to the GPU, hooks, speed knobs), and the bytes read; a job that waited for it reports them."""
    record = {"read_s": round(read_s, 3), "place_s": round(place_s, 3), "read_gib": round(read_bytes / 2**30, 3)}
    try:
        setattr(pipe, ASSEMBLY_ATTR, record)
    except AttributeError:  # a pipeline object that takes no attributes: nothing to report
        pass


def default_plan(spec: ModelSpec) -> Plan:
    """The planner's choice for ``spec`` at its default size on this machine (callers that have a
    request should plan for it instead)."""
    from wan_studio.memory import hardware, planner
    from wan_studio.memory.plan import Workload

    w, h = spec.default_size
    frames = spec.frames if (spec.frames - 1) % 4 == 0 else spec.frames + 1
    return planner.choose(spec, Workload(w, h, frames, spec.steps), hardware.detect())


def default_loader(models_dir: Any) -> ComponentLoader:
    """The loader the app uses: real models from ``models_dir``, the demo built in code."""
    from wan_studio.memory.loaders import FolderLoader

    return FolderLoader(models_dir)


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
