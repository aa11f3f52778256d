"""What a cluster worker holds: one-expert variants of two-expert models, and pipelines shared
between a worker's own job and the split steps it serves for peers."""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from wan_studio.catalog.specs import ModelSpec, get_spec

Keep = Literal["high", "low"]
EXPERT_ROLE: dict[Keep, str] = {"high": "transformer", "low": "transformer_2"}


def expert_variant(spec: ModelSpec, keep: Keep | None) -> ModelSpec:
    """``spec`` with only one expert (``key@high`` / ``key@low``): the manager caches, plans and
    places it like any model, and the other expert's weights are never read on this worker."""
    if keep is None:
        return spec
    drop = EXPERT_ROLE["low" if keep == "high" else "high"]
    return dataclasses.replace(spec, key=f"{spec.key}@{keep}",
                               components=tuple(c for c in spec.components if c.name != drop))


def spec_for(model_key: str) -> ModelSpec:
    """The spec of ``model`` or ``model@high`` / ``model@low``."""
    base, _, keep = model_key.partition("@")
    return expert_variant(get_spec(base), keep or None)  # type: ignore[arg-type]


@dataclass
class _Held:
    spec: ModelSpec
    plan: Any
    pipe: Any = None
    users: int = 0
    error: BaseException | None = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class PipelineHolder:
    """Keeps a pipeline borrowed from the manager open for everyone in this worker.

    The manager lends a pipeline to one caller at a time, but on a worker its own job and a peer's
    split steps use the same pipeline at once (their forward passes take turns on the GPU lock).
    So one thread per model holds ``manager.use`` open; it lets go when the worker needs another
    model and nobody uses this one.
    """

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}

    @contextmanager
    def borrow(self, spec: ModelSpec, plan: Any) -> Iterator[Any]:
        """The pipeline of ``spec``, placed by the manager with ``plan`` on first use. While others
        use it, a later borrower gets it as placed; ``plan`` may be a callable that makes the plan
        (only called when the pipeline is not held already)."""
        with self._lock:
            h = self._held.get(spec.key)
            if h is not None and h.users == 0 and not callable(plan) and h.plan.label != plan.label:
                h = None  # nobody uses it: re-place it as this borrower asks (e.g. a lighter plan)
            if h is None:
                for key, other in list(self._held.items()):
                    if other.users == 0:  # make room: the manager may need its memory
                        other.done.set()
                        del self._held[key]
                h = self._held[spec.key] = _Held(spec, plan() if callable(plan) else plan)
                threading.Thread(target=self._hold, args=(h,), name=f"hold-{spec.key}", daemon=True).start()
            h.users += 1
        try:
            h.ready.wait()
            if h.error is not None:
                with self._lock:
                    if self._held.get(spec.key) is h:
                        del self._held[spec.key]
                raise h.error
            yield h.pipe
        finally:
            with self._lock:
                h.users -= 1

    def _hold(self, h: _Held) -> None:
        try:
            with self.manager.use(h.spec, h.plan) as pipe:
                h.pipe = pipe
                h.ready.set()
                h.done.wait()
        except BaseException as e:  # noqa: BLE001 - handed to the borrower, who reports it
            h.error = e
            h.ready.set()
