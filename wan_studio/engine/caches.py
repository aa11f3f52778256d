"""Step caches: opt-in accelerators that skip transformer work on some denoising steps.

They trade quality for speed and are off unless a request asks. All three are diffusers hooks
(``transformer.enable_cache``), applied per expert for the two-expert models and removed after the
job, so a cached pipeline never leaks into the next one.

MagCache needs per-model magnitude ratios that only trained weights give: we ship the published
Wan2.2 ratios (``wan_studio/data/magcache_ratios.json``, with their source) and let users calibrate
on their own weights; ratios are never taken from random weights.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.engine.accel import transformers_of
from wan_studio.engine.request import STEP_CACHES, GenerationRequest, RequestError

CacheKind = Literal["first_block", "mag", "taylorseer"]
CACHE_KINDS: tuple[CacheKind, ...] = STEP_CACHES  # type: ignore[assignment]
CACHE_LABELS = {
    # Speed-ups: denoising time of a TI2V-5B 720p 50-step job at the default setting, H200
    # (docs/BENCHMARKS.md, "Step caches"). The first-block cache's depends on the weights.
    "first_block": "First-block cache (skips steps whose first block barely changes; speed-up depends on the prompt, softer detail)",
    "mag": "MagCache (skips steps by residual magnitude; ~2× faster denoising, small quality loss)",
    "taylorseer": "TaylorSeer (predicts 3 of every 4 steps by Taylor expansion; ~3× faster denoising; the longer the interval, the more quality it costs)",
}
DEFAULT_THRESHOLD = {"first_block": 0.05, "mag": 0.06, "taylorseer": 4.0}
PUBLISHED = Path(__file__).resolve().parent.parent / "data" / "magcache_ratios.json"


def mode_of(request: GenerationRequest) -> str:
    """``image-to-video`` when the request starts from an image, else ``text-to-video``."""
    return "image-to-video" if request.image else "text-to-video"


def _nearest(values: list[float], length: int) -> list[float]:
    """Stretch or shrink a per-step curve to ``length`` steps by nearest neighbour."""
    if length == len(values):
        return list(values)
    idx = np.round(np.linspace(0, len(values) - 1, length)).astype(int)
    return [float(values[i]) for i in idx]


class MagRatios:
    """Per-step MagCache ratios: the published ones, overridden by calibrations stored on disk."""

    def __init__(self, calibration_dir: Path | None = None, published: Path = PUBLISHED) -> None:
        data = json.loads(Path(published).read_text(encoding="utf-8"))
        self.source = data["source"]
        # Published lists interleave cond/uncond and leave out the first step; we keep the
        # conditional curve (the two agree to ~1e-4) with 1.0 for the first step.
        self._published = {k: [1.0] + v[0::2] for k, v in data["ratios"].items()}
        self.calibration_dir = Path(calibration_dir) if calibration_dir else None

    def _calibrated_path(self, model: str, mode: str) -> Path | None:
        return self.calibration_dir / f"magcache-{model}-{mode}.json" if self.calibration_dir else None

    def lookup(self, model: str, mode: str) -> tuple[list[float], str] | None:
        """(per-step ratios, where they came from) for ``model`` in ``mode``, or None."""
        path = self._calibrated_path(model, mode)
        if path is not None and path.exists():
            return json.loads(path.read_text(encoding="utf-8"))["ratios"], f"calibrated on your weights ({path.name})"
        key = f"{model}/{mode}"
        if key in self._published:
            return self._published[key], "published Wan2.2 ratios (MagCache authors)"
        return None

    def save(self, model: str, mode: str, ratios: list[float], steps: int) -> Path:
        """Store ratios calibrated on this machine's weights."""
        path = self._calibrated_path(model, mode)
        if path is None:
            raise ValueError("no folder to store calibrations in")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": model, "mode": mode, "steps": steps, "ratios": ratios}, indent=1))
        return path


@dataclass(frozen=True)
class CachePlan:
    """What a step cache will do for one job: the diffusers config per expert, and a note."""

    kind: CacheKind
    configs: tuple[Any, ...]
    note: str


def expert_steps(pipe: Any, spec: ModelSpec, request: GenerationRequest) -> list[int]:
    """How many of the request's steps each transformer runs (one entry per expert)."""
    if spec.boundary is None or getattr(pipe, "transformer_2", None) is None:
        return [request.steps]
    from wan_studio.engine.sampler import official_scheduler

    scheduler = official_scheduler(pipe.scheduler, request.shift)
    scheduler.set_timesteps(request.steps)
    boundary = spec.boundary * scheduler.config.num_train_timesteps
    high = int(sum(1 for t in scheduler.timesteps if float(t) >= boundary))
    return [high, request.steps - high]


def plan_cache(pipe: Any, request: GenerationRequest, kind: CacheKind, threshold: float | None,
               ratios: MagRatios) -> CachePlan:
    """Build the diffusers cache configs for ``kind``; RequestError when it cannot apply."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    spec = get_spec(request.model)
    if kind not in CACHE_KINDS:
        raise RequestError(f"unknown step cache {kind!r}; choose one of {', '.join(CACHE_KINDS)}")
    value = DEFAULT_THRESHOLD[kind] if threshold is None else threshold
    steps = expert_steps(pipe, spec, request)
    if kind == "first_block":
        return CachePlan(kind, tuple(FirstBlockCacheConfig(threshold=value) for _ in steps),
                         f"first-block cache, threshold {value:g}")
    if kind == "taylorseer":
        interval = max(2, int(value))
        configs = tuple(TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=min(3, n),
                                              use_lite_mode=True) for n in steps)
        return CachePlan(kind, configs, f"TaylorSeer, full step every {interval}")
    found = ratios.lookup(spec.key, mode_of(request))
    if found is None:
        hint = ("the demo model has random weights, so no ratios exist for it" if spec.is_demo
                else "run “calibrate MagCache” once on your weights")
        raise RequestError(f"MagCache has no ratios for {spec.title} ({mode_of(request)}): {hint}")
    curve, source = found
    curve = _nearest(curve, request.steps)
    configs, start = [], 0
    for n in steps:
        configs.append(MagCacheConfig(threshold=value, num_inference_steps=n, mag_ratios=curve[start:start + n]))
        start += n
    return CachePlan(kind, tuple(configs), f"MagCache, threshold {value:g}, {source}")


@contextmanager
def step_cache(pipe: Any, plan: CachePlan | None) -> Iterator[None]:
    """Enable ``plan`` on every expert for the duration of one job, then remove it."""
    models = transformers_of(pipe)
    if plan is None:
        yield
        return
    enabled = []
    try:
        for model, config in zip(models, plan.configs):
            model.enable_cache(config)
            enabled.append(model)
        yield
    finally:
        for model in enabled:
            model.disable_cache()


class _Capture(logging.Handler):
    """Collects the per-context ratio lists MagCache logs at the end of a calibration run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.runs: list[list[float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"Calibration Results: (\[.*\])", record.getMessage())
        if m:  # logging.Handler.handle already holds this handler's lock here
            self.runs.append(json.loads(m.group(1)))


@contextmanager
def magcache_calibration(pipe: Any, request: GenerationRequest) -> Iterator[_Capture]:
    """Run the block inside diffusers' MagCache calibration mode; the capture then holds ratios."""
    from diffusers import MagCacheConfig

    spec = get_spec(request.model)
    if spec.is_demo:
        raise RequestError("the demo model has random weights: ratios measured on it would mean nothing")
    capture = _Capture()
    logger = logging.getLogger("diffusers.hooks.mag_cache")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    models = transformers_of(pipe)
    steps = expert_steps(pipe, spec, request)
    try:
        for model, n in zip(models, steps):
            model.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=n))
        yield capture
    finally:
        for model in models:
            model.disable_cache()
        logger.removeHandler(capture)
        logger.setLevel(old_level)


def ratios_from_capture(capture: _Capture, experts: int) -> list[float]:
    """Join the conditional curves of each expert (logged cond first, then uncond) into one curve."""
    runs = capture.runs
    if len(runs) < 2 * experts:
        raise RuntimeError(f"calibration logged {len(runs)} curves, expected {2 * experts}")
    return [r for k in range(experts) for r in runs[2 * k]]
