"""A fake of the part of the ``pynvml`` module the app uses, with GPUs a test can heat, fill and
unplug. Injected into ``NvmlTelemetry(nvml=FakeNvml(...))`` in place of the real module."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
_MESSAGES = {NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
             NVML_ERROR_GPU_IS_LOST: "GPU is lost"}


class NVMLError(Exception):
    """Same shape as pynvml's: ``value`` is the NVML return code."""

    def __init__(self, value: int) -> None:
        super().__init__(_MESSAGES.get(value, f"NVML error {value}"))
        self.value = value


@dataclass
class FakeGpu:
    """One fake GPU's state; a test changes the fields while the sampler runs. Bytes, °C, mW."""

    name: str = "NVIDIA GeForce RTX 3090"
    total: int = 24 * 2**30
    used: int = 2 * 2**30
    temperature: float = 45.0
    power_mw: int = 120_000
    limit_mw: int | None = 350_000
    util: int = 10
    sm_mhz: int = 1395
    fan: int | None = 40  # None: no fan (datacenter card), NVML says Not Supported
    throttle_mask: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    lost: bool = False


class FakeNvml:
    """Module-like object: ``nvmlInit``, ``nvmlDeviceGet*`` and the constants the app reads."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwThermalSlowdown = 0x40

    def __init__(self, gpus: list[FakeGpu] | None = None, driver_missing: bool = False) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.driver_missing = driver_missing
        self.calls = 0
        self.initialised = False
        self.lock = threading.Lock()

    def _gpu(self, handle: int) -> FakeGpu:
        self.calls += 1
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        if self.driver_missing:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "999.99"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._gpu(index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self._gpu(handle).name.encode()  # old bindings return bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        g = self._gpu(handle)
        return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return int(self._gpu(handle).temperature)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._gpu(handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        g = self._gpu(handle)
        if g.limit_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.limit_mw

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self._gpu(handle).util, memory=0)

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return self._gpu(handle).sm_mhz

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:
        g = self._gpu(handle)
        if g.fan is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.fan

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu(handle).throttle_mask

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._gpu(handle).processes]
