"""Which GPUs this machine has and which one a worker process may see, decided without CUDA.

The supervisor never initialises CUDA: it counts GPUs through NVML, and each worker gets its device
mask (``CUDA_VISIBLE_DEVICES``) in its environment before the process starts, so the CUDA driver
of the worker only ever sees its own GPU (as ``cuda:0``) whatever the worker imports first. The
same way a GPU worker gets PyTorch's pinned-memory settings (``pinned_alloc_conf``): torch reads
its allocator configuration once, at the first CUDA or pinned allocation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from multiprocessing.process import BaseProcess

MASK_VARIABLE = "CUDA_VISIBLE_DEVICES"
# torch's CUDA allocators read the first of these that is set (c10/cuda/CUDAAllocatorConfig.h).
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
# Page-locking a cold worker's host copies was most of its load (TI2V-5B: ~23 s before the first
# step; costs.PIN_BYTES_PER_S). cudaHostAlloc faults in and locks every page on one thread;
# with ``pinned_use_cuda_host_register`` torch mallocs, faults the pages in on
# ``pinned_num_register_threads`` threads and then registers the range. torch takes a power of two
# up to 128 threads; its own benchmark found 8 best, and the worker's loading threads need cores too.
MAX_REGISTER_THREADS = 8
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


def register_threads(cpu_count: int | None) -> int:
    """Threads to fault in pinned pages with: the largest power of two ≤ half the cores, at most
    ``MAX_REGISTER_THREADS`` (1 on a machine of one or two cores: nothing to gain)."""
    half = max(1, (cpu_count or 1) // 2)
    return min(MAX_REGISTER_THREADS, 1 << (half.bit_length() - 1))


def pinned_alloc_conf(environ: Mapping[str, str], cpu_count: int | None) -> tuple[str, str] | None:
    """(variable, value) that turns on multi-threaded page-locking in a GPU worker's allocator
    configuration; None when there is nothing to change.

    Merged into the variable torch will read (``ALLOC_CONF_VARIABLES``), never over it: a user's
    own ``pinned_*`` host-register setting is kept as it is, and every other option stays.
    """
    threads = register_threads(cpu_count)
    if threads < 2:
        return None
    name = next((v for v in ALLOC_CONF_VARIABLES if environ.get(v) is not None), ALLOC_CONF_VARIABLES[0])
    current = environ.get(name, "").strip().strip(",")
    keys = {item.split(":", 1)[0].strip() for item in current.split(",") if item.strip()}
    if keys & {"pinned_use_cuda_host_register", "pinned_use_hip_host_register", "pinned_num_register_threads"}:
        return None
    extra = f"pinned_use_cuda_host_register:True,pinned_num_register_threads:{threads}"
    return name, f"{current},{extra}" if current else extra


def worker_environment(device: str, environ: Mapping[str, str] | None = None,
                       cpu_count: int | None = None) -> dict[str, str]:
    """Variables a worker on ``device`` starts with: its device mask and, on a GPU, the pinned-memory
    settings (``pinned_alloc_conf``; ``cpu_count`` defaults to this machine's)."""
    env = {MASK_VARIABLE: mask_for(device)}
    if device != "cpu":
        conf = pinned_alloc_conf(os.environ if environ is None else environ,
                                 os.cpu_count() if cpu_count is None else cpu_count)
        if conf is not None:
            env[conf[0]] = conf[1]
    return env


def start_masked(process: BaseProcess, mask: str) -> None:
    """Start ``process`` (a ``spawn`` process) with ``CUDA_VISIBLE_DEVICES=mask`` in its environment
    from its first instruction; this process's own environment is put back afterwards."""
    start_with_env(process, {MASK_VARIABLE: mask})


def start_with_env(process: BaseProcess, env: Mapping[str, str]) -> None:
    """Start ``process`` (a ``spawn`` process) with ``env`` set in its environment from its first
    instruction; this process's own environment is put back afterwards."""
    with _env_lock:
        before = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            process.start()
        finally:
            for name, value in before.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
