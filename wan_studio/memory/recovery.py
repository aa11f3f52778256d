"""Out-of-memory recovery: run a job down the planner's ladder until a plan survives.

A CUDA out-of-memory error (``torch.OutOfMemoryError``) during a job frees what the failed attempt
held, moves to the next lighter plan and runs the job again; every attempt is recorded so the
sidecar can say which plan ran and what failed before it.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any, Callable, Generic, TypeVar

import torch

from wan_studio.memory.plan import Plan

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """One try of a job: the plan's label and the out-of-memory message (None if it ran)."""

    plan: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


@dataclass(frozen=True)
class Recovered(Generic[T]):
    """The result of the attempt that worked, its plan, and every attempt in order."""

    value: T
    plan: Plan
    attempts: tuple[Attempt, ...]

    @property
    def retries(self) -> int:
        """How many plans ran out of memory first."""
        return len(self.attempts) - 1


class OutOfMemoryEverywhere(RuntimeError):
    """Every plan on the ladder ran out of memory; the message lists them."""


def free_accelerator_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back, after a failed attempt let go of them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_recovery(ladder: list[Plan], job: Callable[[Plan, tuple[Attempt, ...]], T],
                      on_retry: Callable[[Plan, str], None] | None = None) -> Recovered[T]:
    """Run ``job(plan, attempts_so_far)`` with ``ladder[0]``, then lighter plans after each OOM.

    Only out-of-memory errors are retried; anything else propagates at once.
    """
    attempts: list[Attempt] = []
    for plan in ladder:
        message = None
        try:
            value = job(plan, tuple(attempts))
        except torch.OutOfMemoryError as e:
            # Keep only the text: the exception's traceback pins the failed attempt's tensors.
            message = str(e).split("\n")[0][:300] or "CUDA out of memory"
        if message is None:
            attempts.append(Attempt(plan.label))
            return Recovered(value, plan, tuple(attempts))
        attempts.append(Attempt(plan.label, message))
        free_accelerator_memory()
        if on_retry is not None:
            on_retry(plan, message)
    tried = "; ".join(a.plan for a in attempts)
    raise OutOfMemoryEverywhere(
        f"ran out of GPU memory with every plan ({tried}); lower the resolution or the number of "
        "frames, or close other programs using the GPU")
