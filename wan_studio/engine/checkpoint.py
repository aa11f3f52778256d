"""Step checkpoints: a job's latents and solver state kept on disk while it denoises, so a crash
resumes at the last kept step instead of step 0.

diffusers' Wan pipelines take ``latents=`` but have no "start at step k" argument. A multistep
solver (UniPC) also carries history between steps: the last converted model outputs, their
timesteps, the warm-up order count and the previous sample for its corrector. ``resumed_from``
therefore hands the pipeline only the remaining timesteps and, at the first solver step, gives the
scheduler back the full timestep grid and every piece of its saved state, so the remaining steps
compute what an uninterrupted run computes. A14B's expert choice compares each timestep with the
boundary, so the remaining timesteps pick the same expert as before.

Writing happens on a background thread; the denoising loop pays only the copy of the tensors to
host memory. ``StepCheckpoints`` spaces checkpoints so that copy stays under ``budget`` (1 %) of a
step, and keeps one every step where that is cheap enough (it is on every size measured so far,
see docs/BENCHMARKS.md, "Step checkpoints").
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Solver state that changes from step to step (UniPC; DPM-Solver keeps a subset; Euler only the
# index). The timestep grid itself is rebuilt by ``set_timesteps`` and checked against ``sigmas``.
STATE_FIELDS = ("model_outputs", "timestep_list", "lower_order_nums", "last_sample", "this_order", "_step_index")
FILE_PREFIX = "steps"


def request_key(request_dict: dict[str, Any]) -> str:
    """A fingerprint of everything that shapes a job's latents (its request), 16 hex digits."""
    return hashlib.sha256(json.dumps(request_dict, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _to_host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, list):
        return [_to_host(v) for v in value]
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The step-to-step state of ``scheduler``, copied to host memory."""
    return {name: _to_host(getattr(scheduler, name)) for name in STATE_FIELDS if hasattr(scheduler, name)}


@dataclass
class Snapshot:
    """A job after ``step`` finished steps: latents and solver state on the host."""

    key: str
    step: int
    steps: int
    latents: torch.Tensor
    scheduler: dict[str, Any]
    sigmas: torch.Tensor


@contextmanager
def resumed_from(scheduler: Any, snap: Snapshot | None) -> Iterator[None]:
    """Make the next pipeline call on ``scheduler`` continue ``snap`` (no-op for None).

    The pipeline reads ``scheduler.timesteps`` right after ``set_timesteps``: it sees only the
    timesteps after ``snap.step``. The first ``step`` call then restores the full grid (UniPC looks
    up earlier sigmas by index and counts the steps left for its final lower order) and the saved
    state, moved to the device the latents are on.
    """
    if snap is None:
        yield
        return
    original_set, original_step = scheduler.set_timesteps, scheduler.step
    full: dict[str, Any] = {}

    def set_timesteps(*args: Any, **kwargs: Any) -> None:
        original_set(*args, **kwargs)
        full["timesteps"] = scheduler.timesteps
        scheduler.timesteps = scheduler.timesteps[snap.step:]

    def step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if "timesteps" in full:
            scheduler.timesteps = full.pop("timesteps")
            for name, value in snap.scheduler.items():
                setattr(scheduler, name, _to_device(value, sample.device))
            del scheduler.step  # later steps go straight to the class's method
        return original_step(model_output, timestep, sample, *args, **kwargs)

    scheduler.set_timesteps, scheduler.step = set_timesteps, step
    try:
        yield
    finally:
        for name in ("set_timesteps", "step"):
            scheduler.__dict__.pop(name, None)


class _Writer:
    """One background thread writing the newest snapshot; an older one still waiting is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cv = threading.Condition()
        self._pending: Snapshot | None = None
        self._busy = False
        self._error: BaseException | None = None
        self.written = 0
        threading.Thread(target=self._run, name="step-checkpoint", daemon=True).start()

    def put(self, snap: Snapshot) -> None:
        with self._cv:
            self._pending = snap
            self._cv.notify_all()

    def flush(self) -> None:
        """Wait until everything handed over is on disk."""
        with self._cv:
            self._cv.wait_for(lambda: self._pending is None and not self._busy)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None)
                snap, self._pending, self._busy = self._pending, None, True
            try:
                tmp = self.path.with_name(f".{self.path.name}.tmp")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(snap.__dict__, tmp)
                os.replace(tmp, self.path)  # a kill mid-write leaves the previous checkpoint whole
                self.written += 1
            except (OSError, RuntimeError) as e:
                # A full disk costs the checkpoint, never the job; torch.save reports it as a
                # RuntimeError of its zip writer. The thread must live on: flush() waits on it.
                self._error = e
                tmp.unlink(missing_ok=True)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()


@dataclass
class StepCheckpoints:
    """The checkpoints of one run (a job, or one window of a long clip) in ``folder``.

    ``key`` ties them to the request; ``budget`` is the share of a step (0.01 = 1 %) the host copy
    may cost on average. ``copy_s`` is the time the denoising loop spent copying, seconds.
    """

    folder: Path
    key: str
    name: str = FILE_PREFIX
    budget: float = 0.01
    copy_s: float = 0.0
    taken: int = 0
    every: int = 1
    _last_step: int = field(default=0, repr=False)
    _writer: _Writer | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return Path(self.folder) / f"{self.name}.pt"

    def load(self, scheduler: Any, steps: int, device: str = "cpu") -> Snapshot | None:
        """The kept snapshot of this request, or None when there is none or it no longer applies
        (another request, step count or timestep grid)."""
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=False)
            snap = Snapshot(**data)
        except (OSError, EOFError, RuntimeError, TypeError, ValueError):
            return None
        if snap.key != self.key or snap.steps != steps or not 0 < snap.step <= steps:
            return None
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(steps, device=device)
        if probe.sigmas.shape != snap.sigmas.shape or not torch.equal(probe.sigmas.cpu(), snap.sigmas):
            return None
        self._last_step = snap.step
        return snap

    def offer(self, step: int, steps: int, latents: torch.Tensor, scheduler: Any, step_s: float | None) -> None:
        """Keep the state after ``step`` finished steps when one is due; ``step_s`` is the latest
        step time (seconds), used to keep the copies under ``budget`` of the denoising time."""
        if step - self._last_step < self.every:
            return
        t0 = time.perf_counter()
        snap = Snapshot(self.key, step, steps, _to_host(latents), scheduler_state(scheduler),
                        scheduler.sigmas.detach().cpu())
        spent = time.perf_counter() - t0
        self.copy_s += spent
        self.taken += 1
        self._last_step = step
        if step_s:
            self.every = max(1, math.ceil(spent / (self.budget * step_s)))
        if self._writer is None:
            self._writer = _Writer(self.path)
        self._writer.put(snap)

    def flush(self) -> None:
        """Wait until the newest offered checkpoint is on disk."""
        if self._writer is not None:
            self._writer.flush()

    def remove(self) -> None:
        """Delete the checkpoint (the video it led to is written)."""
        self.flush()
        self.path.unlink(missing_ok=True)
        self.path.with_name(f".{self.path.name}.tmp").unlink(missing_ok=True)

    def record(self, resumed_from: int | None) -> dict[str, Any]:
        """Sidecar entry: where the run resumed (None: from the start), checkpoints taken and
        the time the loop spent on them, seconds."""
        return {"resumed_from_step": resumed_from, "taken": self.taken, "every_steps": self.every,
                "copy_s": round(self.copy_s, 4)}
