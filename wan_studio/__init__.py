"""Wan Studio: run the Wan2.2 video models on consumer GPUs."""

import logging as _logging
import sys as _sys

__version__ = "0.1.0"


def _hide_cuda_only_packages() -> None:
    """On a machine without CUDA, keep diffusers/transformers from importing xformers and bitsandbytes.

    Both libraries probe these packages at import time; on a CPU build of torch the packages can only
    print warnings about missing CUDA kernels. A ``None`` entry in ``sys.modules`` makes
    ``importlib.util.find_spec`` report them as absent, so the CUDA-only code paths are skipped.
    On a CUDA machine nothing changes and they load lazily where used.
    """
    import torch

    if torch.cuda.is_available():
        return
    for name in ("xformers", "bitsandbytes"):
        if name not in _sys.modules:
            _sys.modules[name] = None  # type: ignore[assignment]


_hide_cuda_only_packages()

# diffusers' image-to-video module names CLIPImageProcessor, which transformers resolves to its PIL
# twin when torchvision is absent (we never use it: Wan2.2 has no image encoder) and warns about it.
_logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision" not in record.getMessage()
)
