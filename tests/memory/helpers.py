"""Shared helpers for memory tests: CPU versions of planner plans and a short tiny-pipeline run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory.hardware import GIB, Hardware
from wan_studio.memory.plan import TRANSFORMERS, Plan, Workload
from wan_studio.memory.planner import choose

TINY_WORK = Workload(64, 64, 5, 2)
BIG_CPU_BOX = Hardware((), 1024 * GIB, 1024 * GIB)


def cpu_plan(spec: ModelSpec, offload: str | None = None, storage: str | None = None, label: str | None = None) -> Plan:
    """The planner's no-GPU plan for ``spec``, optionally with another offload mode / storage."""
    plan = choose(spec, TINY_WORK, BIG_CPU_BOX)
    placements = tuple(
        replace(p, offload=offload or p.offload,
                storage=storage if storage and p.component in TRANSFORMERS else p.storage)
        for p in plan.placements)
    return replace(plan, placements=placements, label=label or f"cpu {offload or 'plain'} {storage or ''}")


def run_frames(pipe: Any, spec: ModelSpec, seed: int = 0) -> np.ndarray:
    """Two denoising steps at 64×64×5 with CFG; frames as float32 in [0, 1]."""
    kwargs: dict[str, Any] = dict(prompt="a fox in snow", negative_prompt="blur", height=64, width=64, num_frames=5,
                                  num_inference_steps=2, guidance_scale=4.0, output_type="np",
                                  generator=torch.Generator().manual_seed(seed))
    if spec.guidance_2 is not None:
        kwargs["guidance_scale_2"] = 3.0
    if spec.requires_image:
        kwargs["image"] = Image.new("RGB", (64, 64), (200, 80, 30))
    with torch.inference_mode():
        return np.asarray(pipe(**kwargs).frames[0], dtype=np.float32)
