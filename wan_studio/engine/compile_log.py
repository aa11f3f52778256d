"""Which shapes a worker's transformers have run, so a job's estimate counts the compile it causes.

torch._dynamo traces a compiled block for the shapes of its first call. A call with other sizes
fails the guards and recompiles with the changed sizes made symbolic ("automatic dynamic shapes"),
after which the block runs any size on that graph. A TI2V model's job from an image passes a
timestep per token, a tensor of another rank: a graph of its own, traced the same way. Measured on
an H200 through the worker (bench/size_menu.py, 2026-12-02, tests/data/gpu_measured.json): the
second size a compiled TI2V-5B ran recompiled (720p 10 s after 720p 5 s: 6.2 s), the third and
fourth did not (1080p 10 s and portrait 1080p 10 s after those: 0.5 s and 0.3 s beyond a step), and
the first job of the other timestep kind did (from an image after a text job at 1080p 5 s, 4.0 s;
portrait 720p 5 s from text after 720p 5 s from an image, 5.0 s).

The log holds no torch state: the job path tells it what ran (``ran``) and asks what a job will
compile (``needs``); a model the worker loads afresh starts over (``forget``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# What one shape of a job makes the worker compile: everything (the model's first run in this
# worker), a recompile (a shape its compiled blocks have not traced), or nothing.
CompileNeed = Literal["compile", "recompile", "none"]

# Sizes after which dynamo has made a graph's sizes symbolic and stops recompiling for new ones.
SIZES_UNTIL_DYNAMIC = 2


@dataclass(frozen=True)
class RunShape:
    """The shape a transformer forward is traced at: pixels, frames, and whether the timestep is
    per token (a TI2V model from an image, or a long clip's later windows)."""

    width: int
    height: int
    frames: int
    per_token_timestep: bool = False


@dataclass
class CompileLog:
    """Per model key: the sizes each timestep kind has run in this worker process."""

    _runs: dict[str, dict[bool, set[tuple[int, int, int]]]] = field(default_factory=dict)

    def needs(self, model: str, shapes: list[RunShape], compiled: bool) -> list[CompileNeed]:
        """What each of ``shapes`` (a job's, in the order it runs them) makes the worker compile;
        ``compiled``: the model's blocks are torch.compiled (an eager model compiles nothing after
        its first call). Later shapes count the earlier ones as run."""
        runs = {kind: set(sizes) for kind, sizes in self._runs.get(model, {}).items()}
        out: list[CompileNeed] = []
        first = model not in self._runs
        for shape in shapes:
            sizes = runs.setdefault(shape.per_token_timestep, set())
            size = (shape.width, shape.height, shape.frames)
            if first:
                out.append("compile")
                first = False
            elif not compiled or size in sizes or len(sizes) >= SIZES_UNTIL_DYNAMIC:
                out.append("none")
            else:
                out.append("recompile")
            sizes.add(size)
        return out

    def ran(self, model: str, shapes: list[RunShape]) -> None:
        """Note that ``model`` ran every one of ``shapes`` in this process."""
        runs = self._runs.setdefault(model, {})
        for shape in shapes:
            runs.setdefault(shape.per_token_timestep, set()).add((shape.width, shape.height, shape.frames))

    def forget(self, model: str) -> None:
        """``model`` is loaded afresh: its next job compiles from the start."""
        self._runs.pop(model, None)


def job_shapes(request: object, per_token_timestep_model: bool) -> list[RunShape]:
    """The shapes a resolved request (``GenerationRequest``, duck-typed) runs, in order: one for a
    clip; for a long clip its first window's and, when there are more, the later windows' (which
    start from a frame). ``per_token_timestep_model``: the model takes a timestep per token from an
    image (TI2V)."""
    w, h, f = int(request.width), int(request.height), int(request.num_frames)  # type: ignore[attr-defined]
    image = getattr(request, "image", None) is not None
    first = RunShape(w, h, f, per_token_timestep_model and image)
    total = getattr(request, "total_frames", None)
    if total is None or total <= f:
        return [first]
    later = RunShape(w, h, f, per_token_timestep_model)
    return [first] if later == first else [first, later]
