"""The one place that holds loaded pipelines for the session.

Callers borrow a pipeline with ``with manager.use(spec) as pipe:``; while borrowed it is locked and
never evicted. Loading a model that would not fit beside the others first unloads the least
recently used unlocked ones.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from wan_studio.catalog.specs import ModelSpec

Loader = Callable[[ModelSpec], Any]


@dataclass
class CacheEntry:
    """A loaded pipeline and how many callers hold it right now."""

    spec: ModelSpec
    pipe: Any
    placement: str
    locks: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class ModelManager:
    """Session cache of pipelines, keyed by model, LRU with lock counts.

    ``max_loaded`` bounds how many real (non-demo) models stay loaded at once; the demo model is
    tiny and always allowed.
    """

    def __init__(self, loader: Loader, max_loaded: int = 1) -> None:
        self._loader = loader
        self._max_loaded = max_loaded
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        # One lock per model so two callers never load the same model twice at once.
        self._load_locks: dict[str, threading.Lock] = {}

    @contextmanager
    def use(self, spec: ModelSpec) -> Iterator[Any]:
        """Borrow the pipeline of ``spec``, loading it if needed; it stays locked inside the block."""
        entry = self._acquire(spec)
        try:
            yield entry.pipe
        finally:
            with self._lock:
                entry.locks -= 1

    def _acquire(self, spec: ModelSpec) -> CacheEntry:
        with self._lock:
            load_lock = self._load_locks.setdefault(spec.key, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._entries.get(spec.key)
                if entry is not None:
                    entry.locks += 1
                    self._entries.move_to_end(spec.key)
                    return entry
                if not spec.is_demo:
                    self._evict_for_one_more()
            pipe, placement = self._loader(spec)
            with self._lock:
                entry = CacheEntry(spec, pipe, placement, locks=1)
                self._entries[spec.key] = entry
                return entry

    def _evict_for_one_more(self) -> None:
        real = [k for k, e in self._entries.items() if not e.spec.is_demo]
        while len(real) >= self._max_loaded:
            victim = next((k for k in real if self._entries[k].locks == 0), None)
            if victim is None:
                break
            self._drop(victim)
            real.remove(victim)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        del entry.pipe
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass

    def loaded(self) -> dict[str, str]:
        """Model key -> placement text for every loaded pipeline, least recently used first."""
        with self._lock:
            return {k: e.placement for k, e in self._entries.items()}

    def unload_all(self) -> list[str]:
        """Unload every pipeline no caller holds; return the keys unloaded."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.locks == 0]
            for k in keys:
                self._drop(k)
            return keys


def place_pipeline(pipe: Any, spec: ModelSpec) -> str:
    """Put a freshly loaded pipeline on the best device; return a one-line description.

    Without CUDA everything stays on the CPU. With CUDA a pipeline that fits the free memory with
    room for activations goes resident; otherwise diffusers' model offload keeps only the running
    component on the GPU (TI2V-5B peaks at ~14.6 GiB that way). Real models decode with VAE tiling,
    the usual out-of-memory point at 720p.
    """
    import torch

    pipe.set_progress_bar_config(disable=True)
    if not torch.cuda.is_available():
        return "cpu"
    free, _total = torch.cuda.mem_get_info()
    need = spec.total_params * 2 + 12 * 2**30
    if not spec.is_demo:
        pipe.vae.enable_tiling()
    if spec.is_demo or free > need:
        pipe.to("cuda")
        return "cuda, resident"
    pipe.enable_model_cpu_offload()
    return "cuda, model offload"


def default_loader(models_dir: Path) -> Loader:
    """Loader for ``ModelManager``: the demo from code, real models from ``models_dir``."""
    from wan_studio.catalog import loading, tiny

    def load(spec: ModelSpec) -> tuple[Any, str]:
        if spec.is_demo:
            pipe = tiny.build_demo(spec.task, spec.shift)
        else:
            pipe = loading.load_pipeline(spec, loading.model_folder(spec, models_dir))
        return pipe, place_pipeline(pipe, spec)

    return load
