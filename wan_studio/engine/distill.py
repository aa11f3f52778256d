"""Step-distilled ("fast") recipes: the published few-step way to sample each model, as data.

A recipe names the distill LoRA files (one per expert, in ``--loras-dir`` as the Hub download lays
them out), the sampler the weights were distilled for, its step grid, shift and guidance. Sources
and what each costs are in docs/FAST.md. A request opts in with ``fast=<recipe key>``; the recipe
then fills steps, shift and guidance (1: one transformer pass per step) unless the request sets them.

The sampler is flow-matching Euler (``FlowMatchEulerDiscreteScheduler``) on the recipe's grid:
``sigmas`` unshifted, one per step, then shifted by the request's ``shift`` the way Wan's
``timestep_shift`` does (σ' = s·σ / (1 + (s−1)·σ)). With ``renoise`` (distribution-matching
distillation) each step predicts the clean video and adds fresh noise at the next σ.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Expert = Literal["high", "low", "both"]
HUB_CLI = "hf download"


@dataclass(frozen=True)
class DistillLora:
    """One distill LoRA file: its path inside ``--loras-dir`` (= inside its Hub repo) and its expert."""

    file: str
    expert: Expert
    weight: float = 1.0


@dataclass(frozen=True)
class FastRecipe:
    """The published few-step recipe of one model. ``sigmas`` None: the linear grid
    ``1, 1−1/n, …, 1/n`` for any step count ``n`` (what the Lightning sampler uses)."""

    key: str
    model: str
    label: str
    hub_repo: str
    loras: tuple[DistillLora, ...]
    steps: int
    shift: float
    source: str
    sigmas: tuple[float, ...] | None = None
    renoise: bool = False
    guidance: float = 1.0
    motion_steps: int = 0
    motion_guidance: float | None = None  # guidance of the motion phase; None = the model's own

    def lora_choices(self) -> list[dict[str, Any]]:
        """The recipe's files as request LoRA entries, each at full strength on its expert only."""
        out = []
        for f in self.loras:
            high = f.weight if f.expert in ("high", "both") else 0.0
            low = f.weight if f.expert in ("low", "both") else 0.0
            out.append({"file": f.file, "weight": high, "weight_2": low})
        return out

    def download_command(self, loras_dir: Path | str) -> str:
        """The shell command that puts the recipe's files where ``loras_dir`` expects them."""
        files = " ".join(f.file for f in self.loras)
        return f"{HUB_CLI} {self.hub_repo} {files} --local-dir {loras_dir}"

    def missing(self, loras_dir: Path | str) -> list[str]:
        """The recipe's files not present under ``loras_dir``."""
        return [f.file for f in self.loras if not (Path(loras_dir) / f.file).is_file()]


_LIGHTNING = "https://huggingface.co/lightx2v/Wan2.2-Lightning"
RECIPES: dict[str, FastRecipe] = {r.key: r for r in (
    FastRecipe(
        key="lightning-t2v-a14b", model="t2v-a14b", label="Lightning 4-step (lightx2v, T2V V1.1)",
        hub_repo="lightx2v/Wan2.2-Lightning",
        loras=(DistillLora("Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/high_noise_model.safetensors", "high"),
               DistillLora("Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/low_noise_model.safetensors", "low")),
        steps=4, shift=5.0, source=_LIGHTNING, motion_guidance=4.0),
    FastRecipe(
        key="lightning-i2v-a14b", model="i2v-a14b", label="Lightning 4-step (lightx2v, I2V V1)",
        hub_repo="lightx2v/Wan2.2-Lightning",
        loras=(DistillLora("Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/high_noise_model.safetensors", "high"),
               DistillLora("Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/low_noise_model.safetensors", "low")),
        steps=4, shift=5.0, source=_LIGHTNING, motion_guidance=3.5),
    # The tiny two-expert demo: the same sampler with LoRAs the tests write; no Hub files.
    FastRecipe(
        key="demo-distilled", model="demo", label="Demo 4-step (sampler only, random weights)",
        hub_repo="", loras=(), steps=4, shift=5.0, source="built in", motion_guidance=5.0),
)}


def get_recipe(key: str) -> FastRecipe:
    """Look up a recipe; the error lists the ones that exist."""
    try:
        return RECIPES[key]
    except KeyError:
        raise KeyError(f"unknown fast recipe {key!r}; known: {', '.join(RECIPES)}") from None


def recipes_for(model: str) -> list[FastRecipe]:
    """The fast recipes published for ``model`` (a spec key)."""
    return [r for r in RECIPES.values() if r.model == model]


def grid(recipe: FastRecipe, steps: int) -> list[float]:
    """The unshifted σ of each of ``steps`` steps (1.0 first)."""
    if recipe.sigmas is not None:
        return list(recipe.sigmas)
    return [float(x) for x in np.linspace(1.0, 0.0, steps + 1)[:-1]]


def shifted(sigmas: list[float], shift: float) -> list[float]:
    """σ after Wan's timestep shift (timestep = 1000·σ)."""
    return [shift * s / (1 + (shift - 1) * s) for s in sigmas]


@contextmanager
def distilled_sampler(runner: Any, recipe: FastRecipe, steps: int, shift: float) -> Iterator[list[float]]:
    """Swap the runner's scheduler for the recipe's flow-matching Euler on its grid for one call.

    The Wan pipelines call ``scheduler.set_timesteps(num_inference_steps)`` themselves; the
    scheduler's own ``sigmas=`` argument carries the grid, so the loop, the expert switch at the
    boundary and the step callback see the distilled timesteps. Yields the timesteps (0…1000).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    sigmas = grid(recipe, steps)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift,
                                                stochastic_sampling=recipe.renoise)
    plain = scheduler.set_timesteps

    def set_timesteps(num_inference_steps: int | None = None, device: Any = None, **_: Any) -> None:
        plain(sigmas=sigmas, device=device)

    scheduler.set_timesteps = set_timesteps  # type: ignore[method-assign]
    original = runner.scheduler
    runner.scheduler = scheduler
    try:
        yield [1000.0 * s for s in shifted(sigmas, shift)]
    finally:
        runner.scheduler = original


def high_noise_steps(recipe: FastRecipe, steps: int, shift: float, boundary: float | None) -> int:
    """How many of the job's steps fall on the high-noise expert (all of them on one-expert models)."""
    if boundary is None:
        return steps
    return sum(1 for s in shifted(grid(recipe, steps), shift) if s * 1000 >= boundary * 1000)


@dataclass
class MotionPhase:
    """The first ``steps`` steps of a distilled job on the base weights with ``guidance`` (two passes
    each, the distill LoRAs scaled to 0); from then on the LoRAs at strength and guidance 1.

    It runs inside one pipeline call: diffusers' Wan loop reads ``pipe._guidance_scale`` anew at
    every step to decide whether to run the unconditional pass, so the switch in the step callback
    keeps one sampler and one timestep grid over both phases.
    """

    steps: int
    guidance: float

    def start(self, pipe: Any, kwargs: dict[str, Any]) -> None:
        """Before the call: guidance on (the negative prompt gets encoded), LoRAs off."""
        from wan_studio.engine.lora import set_lora_scale

        kwargs["guidance_scale"] = self.guidance
        set_lora_scale(pipe, 0.0)

    def after_step(self, pipe: Any, runner: Any, done: int) -> None:
        """In the step callback: after the last motion step, guidance 1 and the LoRAs back on."""
        from wan_studio.engine.lora import set_lora_scale

        if done == self.steps:
            runner._guidance_scale = 1.0
            set_lora_scale(pipe, 1.0)


def motion_phase(request: Any, start: int = 0) -> MotionPhase | None:
    """The motion phase a resolved request asks for, or None (no fast recipe, 0 motion steps, or a
    run resumed at step ``start`` past the phase)."""
    if not getattr(request, "fast", None) or (getattr(request, "motion_steps", None) or 0) <= start:
        return None
    from wan_studio.catalog.specs import get_spec

    recipe = get_recipe(request.fast)
    return MotionPhase(request.motion_steps, recipe.motion_guidance or get_spec(request.model).guidance)


@contextmanager
def sampler_of(runner: Any, request: Any) -> Iterator[None]:
    """The recipe's sampler for a fast request for the duration of one call; nothing otherwise."""
    if not getattr(request, "fast", None):
        yield
        return
    with distilled_sampler(runner, get_recipe(request.fast), request.steps, request.shift):
        yield


def recipe_loras(request: Any, loras_dir: Path) -> list[dict[str, Any]]:
    """The LoRA entries a fast request adds to its own, after checking the files are in ``loras_dir``.

    Raises ``RequestError`` naming the missing files and the command that downloads them.
    """
    from wan_studio.engine.request import RequestError

    if not getattr(request, "fast", None):
        return []
    recipe = get_recipe(request.fast)
    missing = recipe.missing(loras_dir)
    if missing:
        raise RequestError(f"{recipe.label}: {', '.join(missing)} not downloaded; fetch with: "
                           f"{recipe.download_command(loras_dir)}")
    return recipe.lora_choices()
