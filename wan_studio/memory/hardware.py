"""What the machine has: GPUs (free memory, compute capability, speed) and host RAM.

The planner takes a ``Hardware`` record, never queries devices itself, so tests and the benchmark
can describe any machine (one 24 GB card, two, none) without owning it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30

# Dense bf16 tensor throughput (TFLOP/s, fp32 accumulate) by compute capability, used only for
# *relative* speed: how much of a step a PCIe transfer can hide behind. The benchmark passes the
# measured matmul peak instead.
_TFLOPS_BY_CC: dict[tuple[int, int], float] = {
    (7, 5): 30.0,    # Turing (bf16 emulated: see GpuInfo.has_bf16)
    (8, 0): 250.0,   # A100
    (8, 6): 71.0,    # RTX 3090 / A6000
    (8, 9): 165.0,   # RTX 4090 / L40
    (9, 0): 750.0,   # H100 / H200
    (10, 0): 1500.0,
    (12, 0): 210.0,  # RTX 5090
}


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device. Memory in bytes; ``pcie_gbps`` is pinned host→device GB/s (1e9 bytes/s)."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int] = (8, 6)
    bf16_tflops: float | None = None
    pcie_gbps: float | None = None

    @property
    def device(self) -> str:
        """torch device string, e.g. ``cuda:0``."""
        return f"cuda:{self.index}"

    @property
    def has_bf16(self) -> bool:
        """bf16 tensor cores exist from Ampere (8.0) on; older cards emulate it slowly."""
        return self.capability >= (8, 0)

    @property
    def tflops(self) -> float:
        """Dense bf16 TFLOP/s (measured if given, else from the compute capability)."""
        if self.bf16_tflops:
            return self.bf16_tflops
        return _TFLOPS_BY_CC.get(self.capability, 60.0 if self.capability >= (8, 0) else 20.0)

    @property
    def link_gbps(self) -> float:
        """Host↔device bandwidth in GB/s: PCIe 5 on Hopper and later, PCIe 4 otherwise."""
        if self.pcie_gbps:
            return self.pcie_gbps
        return 50.0 if self.capability >= (9, 0) else 22.0


@dataclass(frozen=True)
class Hardware:
    """GPUs of this box (may be empty) and host RAM in bytes; ``cpu_busy``: how many times over its
    cores the CPU is loaded by other work (1.0: it has them to itself), which a CPU job's phases
    are stretched by."""

    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)
    host_total_bytes: int = 32 * GIB
    host_free_bytes: int = 28 * GIB
    cpu_busy: float = 1.0

    @property
    def has_gpu(self) -> bool:
        """True when at least one CUDA device is usable."""
        return bool(self.gpus)

    def describe(self) -> str:
        """One line, e.g. ``2× NVIDIA GeForce RTX 3090 (24 GiB), 64 GiB RAM``."""
        ram = f"{self.host_total_bytes / GIB:.0f} GiB RAM"
        if not self.gpus:
            return f"no GPU, {ram}"
        names = {f"{g.name} ({g.total_bytes / GIB:.0f} GiB)" for g in self.gpus}
        return f"{len(self.gpus)}× {', '.join(sorted(names))}, {ram}"


def gpu(index: int = 0, gib: float = 24.0, name: str = "NVIDIA GeForce RTX 3090",
        capability: tuple[int, int] = (8, 6), free_gib: float | None = None) -> GpuInfo:
    """Describe a GPU by its size in GiB (for tests, the benchmark and the CLI)."""
    total = int(gib * GIB)
    free = int((free_gib if free_gib is not None else gib) * GIB)
    return GpuInfo(index, name, total, free, capability)


def cpu_busy() -> float:
    """The CPU's load over its cores (the last minute's run-queue average), at least 1: a CPU shared
    with four times its cores of other work gives a job about a quarter of its speed."""
    import os

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return 1.0
    return max(1.0, (load - 1.0) / (os.cpu_count() or 1))  # one runnable thread is this app's own


def detect() -> Hardware:
    """Read the real machine: CUDA devices through torch, RAM through psutil; without a GPU, how
    busy the CPU is (``cpu_busy``)."""
    import psutil
    import torch

    vm = psutil.virtual_memory()
    gpus: list[GpuInfo] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(GpuInfo(i, props.name, total, free, (props.major, props.minor)))
    return Hardware(tuple(gpus), vm.total, vm.available, 1.0 if gpus else cpu_busy())
