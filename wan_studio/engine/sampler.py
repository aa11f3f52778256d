"""The Wan2.2 sampler as the official code runs it, on diffusers' UniPC scheduler.

The official flow-UniPC solver (``wan/utils/fm_solvers_unipc.py``) spaces the sigmas linearly from
its largest training sigma, 1 - 1/1000 held as float32 (0.99900001), down to 0, drops the 0,
applies the shift ``s·σ / (1 + (s - 1)·σ)`` and truncates ``σ·1000`` to whole timesteps; order 2,
``bh2``, lower order on the last step, a final sigma of 0. diffusers' ``UniPCMultistepScheduler``
(``use_flow_sigmas``) implements the same solver but spaces its default grid from 1 to 1/1000, so at
4 steps, shift 3, it runs ``[999, 900, 750, 500]`` where the official code runs
``[999, 899, 749, 499]``. ``WanUniPCScheduler`` keeps diffusers' solver and pipelines as they are
and only hands ``set_timesteps`` the official grid (or a pinned list of sigmas, e.g. a distilled
model's few steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from diffusers import UniPCMultistepScheduler

NUM_TRAIN_TIMESTEPS = 1000
# The official solver's sigma_max: its training sigmas are float32, so 0.999 arrives as 0.99900001.
SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
SCHEDULER_NAME = "UniPCMultistepScheduler (flow prediction, official Wan2.2 sigma grid)"

# The official solver's settings, forced over whatever a downloaded scheduler_config.json says.
OFFICIAL_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True,
    solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero",
    use_dynamic_shifting=False, use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False,
    thresholding=False, disable_corrector=[], shift_terminal=None,
)


def unshifted_sigmas(steps: int) -> np.ndarray:
    """The official grid before the shift: ``steps`` values from 0.99900001 down, float64."""
    return np.linspace(SIGMA_MAX, 0.0, steps + 1)[:-1]


def official_sigmas(steps: int, shift: float) -> np.ndarray:
    """The official shifted sigmas of ``steps`` steps (without the final 0), float64."""
    sigmas = unshifted_sigmas(steps)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def official_timesteps(steps: int, shift: float) -> list[int]:
    """The whole timesteps the official solver runs: ``int(σ·1000)``, truncated."""
    return [int(t) for t in (official_sigmas(steps, shift) * NUM_TRAIN_TIMESTEPS).astype(np.int64)]


class WanUniPCScheduler(UniPCMultistepScheduler):
    """diffusers' UniPC flow solver whose ``set_timesteps(n)`` uses the official Wan2.2 grid.

    ``pinned_sigmas``, when set, is used as is instead (final sigmas, already shifted; the
    scheduler is then built with shift 1) and the step count must match its length.
    """

    pinned_sigmas: tuple[float, ...] | None = None

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None,
                      sigmas: Sequence[float] | None = None, mu: float | None = None) -> None:
        """As diffusers' ``set_timesteps``; without ``sigmas`` it takes the pinned or official grid."""
        if sigmas is None and self.pinned_sigmas is not None:
            if num_inference_steps not in (None, len(self.pinned_sigmas)):
                raise ValueError(f"{num_inference_steps} steps asked of a schedule pinned to "
                                 f"{len(self.pinned_sigmas)} sigmas")
            sigmas = self.pinned_sigmas
        elif sigmas is None:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps or sigmas")
            sigmas = unshifted_sigmas(num_inference_steps)
        # diffusers applies config.flow_shift to the sigmas it is given, as the official solver does.
        super().set_timesteps(device=device, sigmas=np.array(sigmas, dtype=np.float64), mu=mu)


def official_scheduler(scheduler: Any, shift: float, sigmas: Sequence[float] | None = None) -> WanUniPCScheduler:
    """A fresh ``WanUniPCScheduler`` from any diffusers scheduler's config, at ``shift``.

    ``sigmas``: an explicit schedule (final values in (0, 1], highest first, without the closing
    0) to run instead of the official grid; ``shift`` is then not applied to it.
    """
    if sigmas is not None:
        values = tuple(float(s) for s in sigmas)
        if not values or any(not 0.0 < s <= 1.0 for s in values) or list(values) != sorted(values, reverse=True):
            raise ValueError("sigmas must be a non-empty, decreasing list of values in (0, 1]")
    config = {**dict(scheduler.config), **OFFICIAL_CONFIG, "flow_shift": 1.0 if sigmas is not None else float(shift)}
    out = WanUniPCScheduler.from_config(config)
    if sigmas is not None:
        out.pinned_sigmas = values
    return out


def sampler_record(scheduler: Any, timesteps: Sequence[Any]) -> dict[str, Any]:
    """What the sidecar says about the sampler: its name, settings and the timesteps that ran.

    ``scheduler`` is the one that ran: the official one, or another (a fast recipe's sampler).
    """
    ours = isinstance(scheduler, WanUniPCScheduler)
    official = ours and scheduler.pinned_sigmas is None
    return {
        "scheduler": SCHEDULER_NAME if ours else type(scheduler).__name__,
        "solver_order": getattr(scheduler.config, "solver_order", None),
        "schedule": "official" if official else ("pinned sigmas" if ours else "the recipe's own"),
        "shift": float(scheduler.config.flow_shift) if official else None,
        "timesteps": [int(float(t)) for t in timesteps],
    }
