"""One job over two GPUs: stand-ins for a pipeline's transformers that run some calls elsewhere.

diffusers' Wan loop calls its current transformer once per guidance branch per step, inside
``cache_context("cond")`` and ``cache_context("uncond")``, and picks ``transformer`` or
``transformer_2`` by the expert boundary. A ``SplitTransformer`` takes the place of one of them, so
the loop itself stays untouched and the numbers computed are the same as on one GPU:

- CFG-parallel: the conditional branch runs here while the peer computes the unconditional one;
  on the "cond" call the peer is started, on the "uncond" call its answer is returned.
- Expert pipeline: the expert lives only on the peer; both branches of a step run there in one
  round trip.

Per step only the latents (in) and the predictions (out) cross the network; the text embeddings and
other call arguments go once per job ("templates"). Nothing here imports Ray: a ``Peer`` is anything
whose ``forward`` returns a future, so the same code runs over Ray actors or an in-process peer.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
import torch

Role = str  # "transformer" (high-noise expert, or the only one) or "transformer_2" (low-noise)
Context = str  # "cond" / "uncond", the cache-context names diffusers uses
STREAMED = ("hidden_states", "timestep")  # arguments that change every step


@dataclass(frozen=True)
class Packed:
    """A tensor as raw bytes (``data``, a uint8 array) plus what is needed to rebuild it."""

    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        """Payload size in bytes."""
        return int(self.data.nbytes)


def pack(t: torch.Tensor) -> Packed:
    """Tensor -> bytes on the CPU (bf16 included: numpy has no bf16, so the raw bytes travel)."""
    # A clone, not .contiguous(): expanded size-1 tensors (the timestep) keep a 0 stride otherwise.
    flat = t.detach().to("cpu").flatten().clone(memory_format=torch.contiguous_format)
    return Packed(str(flat.dtype).removeprefix("torch."), tuple(t.shape), flat.view(torch.uint8).numpy())


def unpack(p: Packed, device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverse of ``pack`` onto ``device``; copies, because received arrays are read-only."""
    raw = torch.from_numpy(np.array(p.data, copy=True))
    return raw.view(getattr(torch, p.dtype)).reshape(p.shape).to(device)


def pack_value(value: Any) -> Any:
    """Pack tensors inside plain values (dicts/lists/tuples); other values pass as they are."""
    if isinstance(value, torch.Tensor):
        return pack(value)
    if isinstance(value, dict):
        return {k: pack_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(pack_value(v) for v in value)
    return value


def unpack_value(value: Any, device: torch.device | str) -> Any:
    """Inverse of ``pack_value``."""
    if isinstance(value, Packed):
        return unpack(value, device)
    if isinstance(value, dict):
        return {k: unpack_value(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(unpack_value(v, device) for v in value)
    return value


def payload_bytes(value: Any) -> int:
    """Bytes of tensor payload inside a packed value (what crosses the network, headers aside)."""
    if isinstance(value, Packed):
        return value.nbytes
    if isinstance(value, dict):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return 0


class Future(Protocol):
    """What a peer call returns: ``result()`` blocks and raises the peer's error."""

    def result(self) -> dict[str, Any]: ...


class Peer(Protocol):
    """The other GPU. ``forward`` runs ``role`` for each of ``contexts`` with the streamed arguments
    plus the stored templates (``templates`` adds new ones first) and answers ``{ctx: Packed}``."""

    name: str

    def forward(self, role: Role, contexts: list[Context], streamed: dict[str, Any],
                templates: dict[Context, dict[str, Any]]) -> Future: ...


class PeerLost(RuntimeError):
    """The peer holding a needed expert stopped answering; the job cannot finish here."""


@dataclass
class SplitStats:
    """What crossed the network for one job, in bytes; ``calls`` counts remote forward calls."""

    mode: str
    peer: str
    sent_bytes: int = 0
    received_bytes: int = 0
    template_bytes: int = 0
    calls: int = 0
    remote_steps: int = 0
    peer_lost_at_step: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the sidecar: totals plus bytes per remote step (sent + received, templates aside)."""
        per_step = (self.sent_bytes + self.received_bytes) / self.remote_steps if self.remote_steps else 0
        return {"mode": self.mode, "peer": self.peer, "sent_bytes": self.sent_bytes,
                "received_bytes": self.received_bytes, "template_bytes": self.template_bytes,
                "remote_calls": self.calls, "remote_steps": self.remote_steps,
                "bytes_per_step": int(per_step), "peer_lost_at_step": self.peer_lost_at_step}


@dataclass
class _Pending:
    hidden: torch.Tensor  # the exact tensor sent; a later call with another tensor recomputes
    future: Future | None
    ready: dict[Context, torch.Tensor] = field(default_factory=dict)


class SplitTransformer:
    """Stands in for ``pipe.transformer`` or ``pipe.transformer_2`` (see the module docstring).

    ``local`` is this GPU's copy of the module (``None`` when only the peer holds it);
    ``remote_contexts`` are the branches the peer computes; ``lock`` serialises this GPU's work
    between jobs sharing it. ``like`` is the module whose ``dtype``/``config``/``device`` the
    pipeline reads (the local module, or a meta-device twin of the remote one).
    """

    def __init__(self, role: Role, like: Any, local: torch.nn.Module | None, peer: Peer | None,
                 remote_contexts: set[Context], stats: SplitStats, lock: threading.Lock | None = None) -> None:
        if local is None and peer is None:
            raise ValueError(f"{role}: no local module and no peer")
        self.role = role
        self.config = like.config
        self.dtype = like.dtype
        self._device = getattr(like, "device", None)
        self.local = local
        self.peer = peer
        self.remote_contexts = set(remote_contexts) if peer is not None else set()
        self.stats = stats
        self.lock = lock or threading.Lock()
        self._ctx: Context = "cond"
        self._sent_templates: set[Context] = set()
        self._templates: dict[Context, dict[str, Any]] = {}
        self._pending: _Pending | None = None
        self._step = 0
        self._remote_step = 0

    @property
    def device(self) -> torch.device:
        """Where the pipeline should put inputs: this GPU (the peer's answers come back here)."""
        return self._device or torch.device("cpu")

    @contextmanager
    def cache_context(self, name: Context, **kwargs: Any) -> Iterator[None]:
        """Remember which branch the next call is; the local module's caches see it too."""
        self._ctx = name
        inner = self.local.cache_context(name, **kwargs) if self.local is not None and hasattr(
            self.local, "cache_context") else nullcontext()
        with inner:
            yield

    def __call__(self, *, hidden_states: torch.Tensor, timestep: torch.Tensor, return_dict: bool = False,
                 **rest: Any) -> tuple[torch.Tensor]:
        ctx = self._ctx
        if ctx not in self._templates:
            self._templates[ctx] = rest
        pending = self._pending
        if pending is None or pending.hidden is not hidden_states:
            pending = self._pending = _Pending(hidden_states, None)
            self._step += 1
            self._start_remote(pending, hidden_states, timestep, ctx)
        if ctx in pending.ready:
            return (pending.ready.pop(ctx),)
        if ctx in self.remote_contexts and pending.future is not None:
            self._collect(pending, hidden_states)
            if ctx in pending.ready:
                return (pending.ready.pop(ctx),)
        if ctx in self.remote_contexts and self.local is None:
            # First use of this branch: its template was not known when the step started.
            pending.future = self._remote([ctx], hidden_states, timestep)
            self._collect(pending, hidden_states)
            return (pending.ready.pop(ctx),)
        return (self._run_local(hidden_states, timestep, rest),)

    def _start_remote(self, pending: _Pending, hidden: torch.Tensor, timestep: torch.Tensor, ctx: Context) -> None:
        # Start every remote branch whose arguments are known; the current one first.
        wanted = [c for c in [ctx, *sorted(self.remote_contexts - {ctx})]
                  if c in self.remote_contexts and c in self._templates]
        if wanted:
            pending.future = self._remote(wanted, hidden, timestep)

    def _remote(self, contexts: list[Context], hidden: torch.Tensor, timestep: torch.Tensor) -> Future | None:
        assert self.peer is not None
        new = {c: pack_value(self._templates[c]) for c in contexts if c not in self._sent_templates}
        streamed = {"hidden_states": pack(hidden), "timestep": pack(timestep)}
        self.stats.template_bytes += payload_bytes(new)
        self.stats.sent_bytes += payload_bytes(streamed)
        self.stats.calls += 1
        if self._remote_step != self._step:
            self._remote_step = self._step
            self.stats.remote_steps += 1
        try:
            future = self.peer.forward(self.role, contexts, streamed, new)
        except Exception as e:  # noqa: BLE001 - a dead peer: handled like a failed answer
            return _Failed(e)
        self._sent_templates.update(new)
        return future

    def _collect(self, pending: _Pending, hidden: torch.Tensor) -> None:
        future, pending.future = pending.future, None
        if future is None:
            return
        try:
            answer = future.result()
        except Exception as e:  # noqa: BLE001 - any failure of the peer means the same here
            self._peer_lost(e)
            return
        for c, packed in answer.items():
            self.stats.received_bytes += payload_bytes(packed)
            pending.ready[c] = unpack(packed, hidden.device)

    def _peer_lost(self, error: Exception) -> None:
        name = self.peer.name if self.peer is not None else "peer"
        self.stats.peer_lost_at_step = self._step
        if self.local is None:
            raise PeerLost(f"{name} holding the {self.role} expert stopped answering: {error}") from error
        # The local copy can do the peer's share: the job finishes alone, with the same numbers.
        self.peer, self.remote_contexts = None, set()

    def _run_local(self, hidden: torch.Tensor, timestep: torch.Tensor, rest: dict[str, Any]) -> torch.Tensor:
        assert self.local is not None
        with self.lock:
            return self.local(hidden_states=hidden, timestep=timestep, return_dict=False, **rest)[0]


class _Failed:
    """A future that raises the error of a call that could not even be sent."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def result(self) -> dict[str, Any]:
        raise self.error


class ExpertHost:
    """The serving side: runs peers' forward calls on this GPU's modules, one job's templates each.

    ``modules`` maps roles to modules (filled as models load); ``lock`` is the same per-GPU lock
    this GPU's own jobs use, so the stages of different jobs take turns instead of contending.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self._templates: dict[tuple[str, Role, Context], dict[str, Any]] = {}
        self._guard = threading.Lock()

    def forward(self, module: torch.nn.Module, job_id: str, role: Role, contexts: list[Context],
                streamed: dict[str, Any], templates: dict[Context, dict[str, Any]]) -> dict[Context, Packed]:
        """Compute ``contexts`` for one step of ``job_id``; answers packed predictions."""
        device = next(module.parameters()).device
        with self._guard:
            for c, t in templates.items():
                # Unpacked once per job: the embeddings stay on this GPU for every later step.
                self._templates[(job_id, role, c)] = unpack_value(t, device)
            missing = [c for c in contexts if (job_id, role, c) not in self._templates]
            kept = {c: self._templates.get((job_id, role, c)) for c in contexts}
        if missing:
            raise KeyError(f"job {job_id}: no arguments for branch(es) {missing} of {role}")
        hidden = unpack(streamed["hidden_states"], device)
        timestep = unpack(streamed["timestep"], device)
        out: dict[Context, Packed] = {}
        with self.lock, torch.inference_mode():
            for c in contexts:
                rest = kept[c]
                ctx = module.cache_context(c) if hasattr(module, "cache_context") else nullcontext()
                with ctx:
                    pred = module(hidden_states=hidden, timestep=timestep, return_dict=False, **rest)[0]
                out[c] = pack(pred)
        return out

    def close(self, job_id: str) -> None:
        """Forget the templates of ``job_id`` (called when the job ends)."""
        with self._guard:
            for key in [k for k in self._templates if k[0] == job_id]:
                del self._templates[key]


def twin_with(pipe: Any, **components: Any) -> Any:
    """A pipeline of the same class sharing every component of ``pipe`` except those given."""
    kwargs = dict(pipe.components)
    kwargs.update(components)
    for key in ("boundary_ratio", "expand_timesteps"):
        if key in pipe.config:
            kwargs[key] = pipe.config[key]
    twin = type(pipe)(**kwargs)
    twin.set_progress_bar_config(disable=True)
    return twin
