"""Per-process set-up, called by every entry point (``app.py``, a worker process, a Ray actor)
before anything imports diffusers. Kept out of the package root so that importing ``wan_studio``
never touches torch or CUDA (see ``wan_studio/__init__.py``)."""

from __future__ import annotations

import logging
import os
import sys

CUDA_ONLY_PACKAGES = ("xformers", "bitsandbytes")
_done = False


def cuda_possible() -> bool:
    """Whether this process could use a CUDA GPU, decided without starting the CUDA driver.

    False for a CPU build of torch, an empty device mask (``CUDA_VISIBLE_DEVICES=""``), or when
    NVML counts no GPU. Stateless: it never calls ``torch.cuda``, so a mask set later still applies.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return False
    from wan_studio.cluster.devices import nvml_gpu_count

    return nvml_gpu_count() > 0


def hide_cuda_only_packages() -> list[str]:
    """On a process without CUDA, keep diffusers/transformers from importing xformers and bitsandbytes.

    Both libraries probe these packages at import time; without CUDA the packages can only print
    warnings about missing CUDA kernels. A ``None`` entry in ``sys.modules`` makes
    ``importlib.util.find_spec`` report them as absent, so the CUDA-only code paths are skipped.
    Returns the names hidden (none with CUDA: they then load lazily where used).
    """
    if cuda_possible():
        return []
    hidden = [name for name in CUDA_ONLY_PACKAGES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    return hidden


def bootstrap() -> None:
    """Set up this process once: hide CUDA-only packages where there is no CUDA and quiet one
    harmless transformers warning. Call it after the device mask is in the environment and before
    diffusers is imported; later calls do nothing."""
    global _done
    if _done:
        return
    _done = True
    hide_cuda_only_packages()
    # diffusers' image-to-video module names CLIPImageProcessor, which transformers resolves to its
    # PIL twin when torchvision is absent (we never use it: Wan2.2 has no image encoder) and warns.
    logging.getLogger("transformers.utils.import_utils").addFilter(
        lambda record: "requires torchvision" not in record.getMessage()
    )
