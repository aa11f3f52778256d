"""Tiny stand-ins for the full-size catalog models, for CPU smoke runs of the size-menu benchmark.

``bench/size_menu.py --tiny --model t2v-a14b`` (or ``i2v-a14b``, ``s2v-14b``) saves a tiny random
model in the real on-disk layout and lets the worker load it with the real loading code. Two things
must then be told the truth in every process, the driver and the spawned worker alike:

- the planner counts a model by its catalog sizes (14B experts): here each component is counted
  as ``TINY_PARAMS`` parameters, so a CPU plan fits;
- the official S2V loader builds the released architectures of UMT5-XXL and the Wan2.1 VAE (fixed
  in the release) before reading their ``.pth`` files: here they are built at the widths the tiny
  folder holds (``TINY_VAE``, ``catalog.tiny``'s text encoder); key mapping and file reading stay real.

``apply()`` does both in this process; ``bench/tinysite/sitecustomize.py`` calls it in every Python
process started with ``BENCH_TINY_MODELS=1`` and that folder (and the repository) on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV = "BENCH_TINY_MODELS"
TINY_PARAMS = 5_000_000
# A Wan2.1 VAE of the released structure (4 levels, 2 residual blocks: what the official key names
# encode) at toy width.
TINY_VAE: dict[str, Any] = dict(base_dim=2, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                temperal_downsample=[False, True, True])
MODELS = ("t2v-a14b", "i2v-a14b", "s2v-14b")


def apply() -> None:
    """Shrink the catalog sizes of ``MODELS`` and make the S2V loader build tiny UMT5 and VAE."""
    from wan_studio.catalog import specs

    for key in MODELS:
        spec = specs.CATALOG[key]
        comps = tuple(dataclasses.replace(c, params=TINY_PARAMS) for c in spec.components)
        specs.CATALOG[key] = dataclasses.replace(spec, components=comps)

    import diffusers
    from wan_studio.catalog import tiny
    from wan_studio.engine.s2v import checkpoint

    if getattr(checkpoint.load_s2v_pipeline, "tiny", False):
        return
    real_load = checkpoint.load_s2v_pipeline

    def tiny_umt5_config(vocab_size: int = 256384) -> Any:
        return tiny.build_text_encoder(vocab_size).config

    def load_tiny_s2v(folder: Path, *args: Any, **kwargs: Any) -> Any:
        # the loader's ``AutoencoderKLWan()`` (the released VAE) at the tiny folder's width, for this call only
        real_vae = diffusers.AutoencoderKLWan
        diffusers.AutoencoderKLWan = lambda: real_vae(**TINY_VAE)  # type: ignore[assignment, misc]
        try:
            return real_load(folder, *args, **kwargs)
        finally:
            diffusers.AutoencoderKLWan = real_vae  # type: ignore[misc]

    load_tiny_s2v.tiny = True  # type: ignore[attr-defined]
    checkpoint.umt5_xxl_config = tiny_umt5_config  # type: ignore[assignment]
    checkpoint.load_s2v_pipeline = load_tiny_s2v  # type: ignore[assignment]


def environment() -> dict[str, str]:
    """The environment variables that make child processes ``apply()`` at start."""
    path = [str(ROOT / "bench" / "tinysite"), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {ENV: "1", "PYTHONPATH": os.pathsep.join(path)}
