"""Which GPUs this machine has and which one a worker process may see, decided without CUDA.

The supervisor never initialises CUDA: it counts GPUs through NVML, and each worker gets its device
mask (``CUDA_VISIBLE_DEVICES``) in its environment before the process starts, so the CUDA driver
of the worker only ever sees its own GPU (as ``cuda:0``) whatever the worker imports first.
"""

from __future__ import annotations

import os
import threading
from multiprocessing.process import BaseProcess

MASK_VARIABLE = "CUDA_VISIBLE_DEVICES"
# os.environ is one per process: two supervisor threads starting workers at once must not see each
# other's mask.
_env_lock = threading.Lock()


def nvml_gpu_count() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver or NVML). NVML ignores the device mask
    and never starts CUDA, so calling it changes nothing for a mask set later."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return 0


def detect_devices() -> list[str]:
    """``cuda:<i>`` for every GPU of this machine, or ``["cpu"]`` when there is none."""
    count = nvml_gpu_count()
    return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]


def mask_for(device: str) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value of a worker on ``device``: its GPU's index for
    ``cuda:<i>``, empty (no GPU at all) for ``cpu``."""
    if device == "cpu":
        return ""
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index.isdigit():
        raise ValueError(f"a worker runs on 'cpu' or 'cuda:<index>', not {device!r}")
    return index


def start_masked(process: BaseProcess, mask: str) -> None:
    """Start ``process`` (a ``spawn`` process) with ``CUDA_VISIBLE_DEVICES=mask`` in its environment
    from its first instruction; this process's own environment is put back afterwards."""
    with _env_lock:
        before = os.environ.get(MASK_VARIABLE)
        os.environ[MASK_VARIABLE] = mask
        try:
            process.start()
        finally:
            if before is None:
                del os.environ[MASK_VARIABLE]
            else:
                os.environ[MASK_VARIABLE] = before
