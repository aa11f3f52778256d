"""Model offload with the CPU copies kept in pinned memory.

The same policy as diffusers' ``enable_model_cpu_offload`` (one component on the GPU at a time,
moved there when it runs), built on accelerate's hook interface so the pipeline finds its
execution device as usual. The difference is where the weights wait: accelerate moves a module
back with ``module.to("cpu")``, which copies every weight off the GPU into fresh pageable memory
(page faults, then a slow unpinned copy back in for the next job). Inference never changes a
weight, so here the CPU copy is made once, pinned, and kept: moving a component off the GPU only
points its tensors back at that copy (no copy at all), and moving it on is one pinned, fast copy.
On an H200 with a 24 GiB cap this took ~17 s off a TI2V-5B 720p job (122.5 → 105.7 s) and an
A14B expert swap from 12.9 s to 0.28 s (docs/BENCHMARKS.md).

The host keeps a copy of every component the whole time (the planner's host-RAM estimate for
model offload already counts them all). Copies are packed into power-of-two slabs so PyTorch's
pinned allocator rounds nothing up, and at most half the RAM is page-locked. Where pinning fails
(no CUDA, the budget is spent, or the OS refuses) a copy stays in ordinary memory and everything
still works, only slower.

Pinned lazily (``lazy=True``, what a plan on a GPU asks): a component's host copy starts as the
weights the load left in ordinary memory, and one background thread per pipeline (``Pinner``)
copies them into pinned slabs afterwards, in the order a job uses the components, swapping each
copy in as it is made. A job that comes first onloads from ordinary memory (slower, still
correct); the load itself no longer waits for page-locking (24 GB of TI2V-5B: 12 s on an H200 host
beside the compile warm-up, docs/BENCHMARKS.md "First video").
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from accelerate.hooks import ModelHook, add_hook_to_module
from accelerate.utils import send_to_device


# PyTorch's pinned-memory allocator rounds every allocation up to a power of two (a 70 MB expert
# weight takes 128 MB), which nearly doubled the host memory of the A14B experts. Weights are packed
# into slabs of exactly this power-of-two size instead, so nothing is rounded.
SLAB_BYTES = 1 << 28
ALIGN = 256
# Page-locked memory is taken from what the OS can swap; keep it to this share of physical RAM
# (tensors beyond it stay in ordinary memory and are copied the slow way).
PINNED_RAM_SHARE = 0.5


def _alloc_pinned(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


class _HostMemory:
    """Hands out host copies: views into pinned slabs while the pinned budget lasts."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.pinned_bytes = 0
        self.slab: torch.Tensor | None = None
        self.offset = 0
        # a pipeline's pinner thread and a job adding tensors (a LoRA) may copy at once
        self._lock = threading.Lock()

    def _pinned_bytes(self, nbytes: int) -> torch.Tensor | None:
        if nbytes > SLAB_BYTES:  # a tensor of its own: pinned only if rounding wastes under a third
            size = 1 << (nbytes - 1).bit_length()
            if size * 2 > nbytes * 3 or self.pinned_bytes + size > self.budget:
                return None
            buf = _alloc_pinned(nbytes)
            self.pinned_bytes += size
            return buf
        if self.slab is None or self.offset + nbytes > SLAB_BYTES:
            if self.pinned_bytes + SLAB_BYTES > self.budget:
                return None
            self.slab = _alloc_pinned(SLAB_BYTES)
            self.pinned_bytes += SLAB_BYTES
            self.offset = 0
        piece = self.slab[self.offset:self.offset + nbytes]
        self.offset += -(-nbytes // ALIGN) * ALIGN
        return piece

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        """A host copy of ``t`` (pinned where possible) that stays valid until dropped; a tensor
        already in pinned memory (placed before, by this module) is kept as it is."""
        t = t.detach()
        if t.device.type == "cpu" and torch.cuda.is_available() and t.is_pinned():
            return t
        if torch.cuda.is_available() and t.numel() > 0:
            with self._lock:
                try:
                    raw = self._pinned_bytes(t.numel() * t.element_size())
                except RuntimeError:  # the OS refused more page-locked memory
                    self.budget = self.pinned_bytes
                    raw = None
            if raw is not None:
                host = raw.view(t.dtype).view(t.shape)
                host.copy_(t)
                return host
        return t if t.device.type == "cpu" else t.to("cpu")


def host_memory() -> _HostMemory:
    """A fresh page-locked budget (``PINNED_RAM_SHARE`` of the RAM) to share among a pipeline's
    offloaded components."""
    return _HostMemory(_pinned_budget())


def _pinned_budget() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total * PINNED_RAM_SHARE)
    except Exception:  # noqa: BLE001 - no way to know: pin nothing
        return 0


class _Seat:
    """Which hooked component holds the GPU now (one per pipeline)."""

    def __init__(self, memory: _HostMemory) -> None:
        self.holder: PinnedOffloadHook | None = None
        self.memory = memory
        self.pinner: Pinner | None = None

    def vacate(self) -> None:
        """Send the seated component back to its host copy (no copy is made) and leave the seat empty."""
        if self.holder is not None:
            self.holder.offload()
            self.holder = None


class PinnedOffloadHook(ModelHook):
    """Moves its module onto ``execution_device`` before it runs and evicts the seat's last holder."""

    def __init__(self, execution_device: torch.device, seat: _Seat, lazy: bool = False) -> None:
        self.execution_device = execution_device
        self.seat = seat
        self.lazy = lazy
        self.module: torch.nn.Module | None = None
        # id(tensor) -> (tensor, its host copy). Rebuilt from the module on every move, so tensors
        # added later (LoRA layers) are picked up and removed ones are let go.
        self.host: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # keys whose host copy is still the load's ordinary memory (``lazy``), for ``pin_copies``
        self.unpinned: set[int] = set()
        self.detached = False
        # moves and the pinner's swaps of one component take turns
        self._lock = threading.RLock()

    def _tensors(self) -> list[torch.Tensor]:
        assert self.module is not None
        seen: dict[int, torch.Tensor] = {}
        for t in [*self.module.parameters(), *self.module.buffers()]:
            seen.setdefault(id(t), t)
        return list(seen.values())

    def _sync_copies(self, lazy: bool = False) -> None:
        fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for t in self._tensors():
            known = self.host.get(id(t))
            if known is not None and known[0] is t:
                fresh[id(t)] = known
            elif lazy:  # the load's own memory until the pinner copies it
                fresh[id(t)] = (t, t.data if t.device.type == "cpu" else t.data.to("cpu"))
                self.unpinned.add(id(t))
            else:  # a tensor not seen before: its current data becomes its host copy
                fresh[id(t)] = (t, self.seat.memory.copy(t.data))
        self.unpinned &= fresh.keys()
        self.host = fresh

    def init_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        with self._lock:
            self.module = module
            self._sync_copies(lazy=self.lazy)
            self.offload()
        return module

    def onload(self) -> None:
        """Copy the module's weights onto the GPU (asynchronously from pinned memory)."""
        with self._lock:
            self._sync_copies()
            for t, host in self.host.values():
                t.data = host.to(self.execution_device, non_blocking=True)

    def offload(self) -> None:
        """Point the module's tensors back at their host copies; the GPU copies are freed."""
        with self._lock:
            for t, host in self.host.values():
                t.data = host

    def pin_copies(self, stop: threading.Event | None = None) -> int:
        """Copy the host copies still in ordinary memory into pinned memory, swapping each in (a
        tensor not on the GPU now points at its new copy, so the old memory is freed); bytes
        pinned. Stops when ``stop`` is set or the hook is taken off."""
        done = 0
        for key in list(self.unpinned):
            if self.detached or (stop is not None and stop.is_set()):
                break
            entry = self.host.get(key)
            if entry is None:
                continue
            t, host = entry
            pinned = self.seat.memory.copy(host)  # the long part, outside the lock
            with self._lock:
                now = self.host.get(key)
                if self.detached or now is None or now[1] is not host:
                    continue
                self.unpinned.discard(key)
                if pinned.data_ptr() == host.data_ptr():  # the budget is spent: it stays as it is
                    continue
                self.host[key] = (t, pinned)
                if t.data.data_ptr() == host.data_ptr():  # not on the GPU now
                    t.data = pinned
                done += pinned.numel() * pinned.element_size()
        return done

    @property
    def on_gpu(self) -> bool:
        return self.seat.holder is self

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if self.seat.holder is not self:
            self.seat.vacate()
            self.onload()
            self.seat.holder = self
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)

    def detach_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        with self._lock:
            self.detached = True
        if self.seat.holder is self:
            self.offload()
            self.seat.holder = None
        return module


# The order a job uses a pipeline's components in: the pinner copies them so.
USE_ORDER = ("text_encoder", "audio_encoder", "image_encoder", "transformer", "transformer_2", "vae")


class Pinner:
    """One thread that pins the host copies of lazily hooked components (``pin_copies``), one
    component after the other; ``record`` says how far it got (bytes, seconds, done)."""

    def __init__(self, hooks: list[PinnedOffloadHook]) -> None:
        self.hooks = hooks
        self.stop = threading.Event()
        self.record: dict[str, Any] = {"pinned_bytes": 0, "s": None, "done": False}
        self._thread = threading.Thread(target=self._run, name="pin-host-copies", daemon=True)

    def start(self) -> Pinner:
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            for hook in self.hooks:
                self.record["pinned_bytes"] += hook.pin_copies(self.stop)
        finally:
            self.record.update(s=round(time.perf_counter() - t0, 3),
                               done=not any(h.unpinned for h in self.hooks))

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the pinning to end (tests, benchmarks); its record."""
        self._thread.join(timeout_s)
        return dict(self.record)

    def cancel(self) -> None:
        self.stop.set()


def enable_pinned_offload(pipe: Any, device: torch.device | str, components: list[str] | None = None,
                          memory: _HostMemory | None = None, lazy: bool = False) -> list[PinnedOffloadHook]:
    """Give every model of ``pipe`` (or only ``components``) a pinned-offload hook sharing one GPU
    seat; return the hooks. ``memory``: the page-locked budget to take the copies from. ``lazy``:
    the copies are pinned afterwards, by the seat's ``Pinner`` (``hooks[0].seat.pinner``; the
    caller starts it once the rest of the pipeline is placed), not now.

    accelerate's ``remove_hook_from_module`` (``pipe.remove_all_hooks``) takes them off again and
    leaves the weights on the CPU.
    """
    device = torch.device(device)
    seat = _Seat(memory if memory is not None else host_memory())
    hooks, names = [], []
    for name, module in pipe.components.items():
        if components is not None and name not in components:
            continue
        if isinstance(module, torch.nn.Module) and name not in getattr(pipe, "_exclude_from_cpu_offload", ()):
            hook = PinnedOffloadHook(device, seat, lazy=lazy)
            add_hook_to_module(module, hook)
            hooks.append(hook)
            names.append(name)
    if lazy and hooks:
        rank = {n: i for i, n in enumerate(USE_ORDER)}
        ordered = [h for _, h in sorted(zip(names, hooks), key=lambda nh: rank.get(nh[0], len(rank)))]
        seat.pinner = Pinner(ordered)
    return hooks


def pinning_of(pipe: Any) -> Pinner | None:
    """The background pinner of ``pipe``'s model-offload seat (None when its copies were pinned
    at placement or it has none)."""
    components = getattr(pipe, "components", None)
    for module in (components.values() if isinstance(components, dict) else ()):
        hook = getattr(module, "_hf_hook", None)
        if isinstance(hook, PinnedOffloadHook):
            return hook.seat.pinner
    return None


def offload_group(module: torch.nn.Module) -> Any:
    """The diffusers block-offload group ``module`` is hooked into (None when it has none)."""
    registry = getattr(module, "_diffusers_hook", None)
    hook = registry.get_hook("group_offloading") if registry is not None else None
    return getattr(hook, "group", None)


def pack_group_offload_copies(module: torch.nn.Module, memory: _HostMemory) -> int:
    """Give diffusers' block offload of ``module`` packed, pinned host copies; return how many.

    Made with ``low_cpu_mem_usage=True``, each streamed group keeps its weights where they were and
    would pin them again at every transfer. Here each weight gets a slab copy once (see
    ``_HostMemory``); the module's tensors point at it, so the original memory is freed as it goes
    and the host holds each weight once. Past the pinned budget a weight stays in ordinary memory
    and diffusers pins it per transfer, as before.
    """
    groups: dict[int, Any] = {}
    for sub in module.modules():
        group = offload_group(sub)
        if group is not None and getattr(group, "stream", None) is not None:
            groups[id(group)] = group
    n = 0
    for group in groups.values():
        for tensor, host in list(group.cpu_param_dict.items()):
            packed = memory.copy(host)
            group.cpu_param_dict[tensor] = packed
            if tensor.device.type == "cpu":
                tensor.data = packed
            n += 1
    return n


EVICT_HANDLE = "_wan_seat_evict"


def evict_seat_before(module: torch.nn.Module, seat: _Seat) -> None:
    """Empty ``seat`` whenever ``module`` starts a forward.

    For a component placed another way (a transformer streamed block by block) that computes on the
    seat's GPU: the text encoder seated there for the prompt would otherwise stay through every
    denoising step, its weights beside the transformer's. ``remove_seat_eviction`` undoes it.
    """
    remove_seat_eviction(module)
    setattr(module, EVICT_HANDLE, module.register_forward_pre_hook(lambda *_: seat.vacate()))


def remove_seat_eviction(module: torch.nn.Module) -> None:
    """Take off the hook of ``evict_seat_before`` (and with it the last reference to its seat)."""
    handle = module.__dict__.pop(EVICT_HANDLE, None)
    if handle is not None:
        handle.remove()
