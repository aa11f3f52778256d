"""GPU telemetry: one ``GpuSample`` record, one ``GpuTelemetry`` interface, an NVML implementation
(nvidia-ml-py, imported as ``pynvml``) and a no-GPU one.

Nothing here imports torch or Gradio, so a worker process, a Ray actor on another PC or a benchmark
can read its GPUs with the same code. Tests inject a fake NVML module into ``NvmlTelemetry``.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

log = logging.getLogger(__name__)

SampleStatus = Literal["ok", "lost"]

# Clock-event ("throttle") reason bits as NVML defines them; looked up on the module first so a
# newer NVML with renumbered constants still wins, the numbers are only the fallback.
_THROTTLE_BITS: tuple[tuple[str, int, str], ...] = (
    ("nvmlClocksEventReasonGpuIdle", 0x1, "idle"),
    ("nvmlClocksEventReasonApplicationsClocksSetting", 0x2, "application clocks"),
    ("nvmlClocksEventReasonSwPowerCap", 0x4, "power cap"),
    ("nvmlClocksEventReasonHwSlowdown", 0x8, "hardware slowdown"),
    ("nvmlClocksEventReasonSyncBoost", 0x10, "sync boost"),
    ("nvmlClocksEventReasonSwThermalSlowdown", 0x20, "thermal (software)"),
    ("nvmlClocksEventReasonHwThermalSlowdown", 0x40, "thermal (hardware)"),
    ("nvmlClocksEventReasonHwPowerBrakeSlowdown", 0x80, "power brake"),
    ("nvmlClocksEventReasonDisplayClockSetting", 0x100, "display clocks"),
)


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU. Bytes for memory, °C, watts, percent, MHz; ``t`` is Unix seconds.

    ``app_used_bytes`` is what this app (this process and its worker children) holds on the GPU;
    ``None`` when the driver does not tell (e.g. Windows WDDM, or a container whose process ids
    differ from the driver's). ``status`` is ``"lost"`` when the GPU stopped answering; then every
    reading is ``None`` and ``error`` says why. Every sample names its host so GPUs of other
    machines can sit beside the local ones.
    """

    host: str
    index: int
    name: str
    t: float
    status: SampleStatus = "ok"
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_free_bytes: int | None = None
    app_used_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    utilization_pct: float | None = None
    sm_clock_mhz: int | None = None
    fan_pct: float | None = None
    throttle_reasons: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        """(host, index): unique over every machine of a cluster."""
        return self.host, self.index

    @property
    def label(self) -> str:
        """``GPU 0`` for a local GPU, ``host/GPU 0`` for one of another machine."""
        return f"GPU {self.index}" if self.host == local_host() else f"{self.host}/GPU {self.index}"

    @property
    def ok(self) -> bool:
        """True when the GPU answered."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the API and for workers pushing samples to the app)."""
        d = asdict(self)
        d["throttle_reasons"] = list(self.throttle_reasons)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuSample:
        """Inverse of ``to_dict``; unknown keys are an error so a version mismatch shows."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown GPU sample field(s): {', '.join(unknown)}")
        data = dict(data)
        data["throttle_reasons"] = tuple(data.get("throttle_reasons") or ())
        return cls(**data)


def local_host() -> str:
    """This machine's name as samples carry it."""
    return socket.gethostname()


class GpuTelemetry(ABC):
    """Reads every GPU of one machine. ``sample()`` is cheap enough to call once a second."""

    host: str

    @property
    @abstractmethod
    def gpu_count(self) -> int:
        """How many GPUs this source reports (0 for the no-GPU source)."""

    @property
    @abstractmethod
    def reason(self) -> str:
        """One sentence for the user: what this source reads, or why there are no GPUs."""

    @abstractmethod
    def sample(self) -> list[GpuSample]:
        """One reading per GPU, in index order; a GPU that stopped answering gives a lost sample."""

    def close(self) -> None:
        """Release the driver; the source is unusable afterwards."""


class NoGpuTelemetry(GpuTelemetry):
    """The source on a machine without NVIDIA GPUs: no samples, and a reason saying so."""

    def __init__(self, reason: str, host: str | None = None) -> None:
        self.host = host or local_host()
        self._reason = reason

    @property
    def gpu_count(self) -> int:
        return 0

    @property
    def reason(self) -> str:
        return self._reason

    def sample(self) -> list[GpuSample]:
        return []


class OwnProcesses:
    """Decides whether a process id belongs to this app: this process, its descendants (worker
    processes), or a pid registered with ``add`` (a worker started some other way)."""

    def __init__(self, root_pid: int | None = None) -> None:
        self.root_pid = root_pid or os.getpid()
        self._extra: set[int] = set()
        self._cache: dict[int, bool] = {}

    def add(self, pid: int) -> None:
        """Count ``pid`` as ours from now on."""
        self._extra.add(pid)
        self._cache.pop(pid, None)

    def is_ours(self, pid: int) -> bool:
        """True when ``pid`` is this app or one of its descendants."""
        if pid == self.root_pid or pid in self._extra:
            return True
        if pid not in self._cache:
            self._cache[pid] = self._descends(pid)
        return self._cache[pid]

    def forget_except(self, live: set[int]) -> None:
        """Drop cached answers for pids that no longer use a GPU (pids get reused)."""
        for pid in [p for p in self._cache if p not in live]:
            del self._cache[pid]

    def _descends(self, pid: int) -> bool:
        # Walk parent links; depth bounded because a parent can exit and be reparented mid-walk.
        for _ in range(64):
            parent = _parent_pid(pid)
            if parent is None or parent <= 1:
                return False
            if parent == self.root_pid or parent in self._extra:
                return True
            pid = parent
        return False


def _parent_pid(pid: int) -> int | None:
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
        # The command name sits in parentheses and may contain spaces; the ppid follows it.
        return int(text[text.rindex(")") + 2:].split()[1])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux (the Windows PC): psutil when present
        import psutil

        return psutil.Process(pid).ppid()
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission: not ours
        return None


class NvmlTelemetry(GpuTelemetry):
    """Reads GPUs through NVML. ``nvml`` is the ``pynvml`` module or a fake with the same names.

    Raises the module's ``NVMLError`` from the constructor when the driver cannot be opened;
    ``open_telemetry`` turns that into a ``NoGpuTelemetry`` with a reason.
    """

    def __init__(self, nvml: Any | None = None, host: str | None = None,
                 own: OwnProcesses | None = None, clock: Callable[[], float] = time.time) -> None:
        self._nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self._clock = clock  # Unix seconds stamped on samples
        self.host = host or local_host()
        self.own = own or OwnProcesses()
        self._nvml.nvmlInit()
        self._count = int(self._nvml.nvmlDeviceGetCount())
        self._handles: dict[int, Any] = {}
        self._names: dict[int, str] = {}
        self._closed = False

    @property
    def gpu_count(self) -> int:
        return self._count

    @property
    def reason(self) -> str:
        driver = self._optional(self._nvml.nvmlSystemGetDriverVersion) if hasattr(
            self._nvml, "nvmlSystemGetDriverVersion") else None
        return f"{self._count} NVIDIA GPU(s) read through NVML" + (f", driver {_text(driver)}" if driver else "")

    def sample(self) -> list[GpuSample]:
        now = self._clock()
        out = []
        for index in range(self._count):
            try:
                out.append(self._read(index, now))
            except self._nvml.NVMLError as e:
                # Forget the handle: if the GPU comes back (driver reset) a fresh one is needed.
                self._handles.pop(index, None)
                out.append(GpuSample(self.host, index, self._names.get(index, "unknown GPU"), now,
                                     status="lost", error=str(e) or type(e).__name__))
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as e:
                log.debug("NVML shutdown failed: %s", e)

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            self._handles[index] = handle
            self._names[index] = _text(self._nvml.nvmlDeviceGetName(handle))
        return self._handles[index]

    def _read(self, index: int, now: float) -> GpuSample:
        n = self._nvml
        h = self._handle(index)
        # Memory and temperature are what the app acts on: if they fail, the GPU counts as lost.
        mem = n.nvmlDeviceGetMemoryInfo(h)
        temp = float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
        power_mw = self._optional(n.nvmlDeviceGetPowerUsage, h)
        limit_mw = self._optional(n.nvmlDeviceGetEnforcedPowerLimit, h)
        util = self._optional(n.nvmlDeviceGetUtilizationRates, h)
        return GpuSample(
            host=self.host,
            index=index,
            name=self._names[index],
            t=now,
            mem_used_bytes=int(mem.used),
            mem_total_bytes=int(mem.total),
            mem_free_bytes=int(mem.free),
            app_used_bytes=self._app_bytes(h),
            temperature_c=temp,
            power_w=power_mw / 1000 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            utilization_pct=float(util.gpu) if util is not None else None,
            sm_clock_mhz=self._optional(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
            fan_pct=self._optional(n.nvmlDeviceGetFanSpeed, h),  # datacenter GPUs have no fan
            throttle_reasons=self._throttle(h),
        )

    def _optional(self, fn: Any, *args: Any) -> Any:
        """Call an NVML getter that some GPUs do not support; ``None`` instead of an error."""
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _app_bytes(self, handle: Any) -> int | None:
        procs = self._optional(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if procs is None:
            return None
        self.own.forget_except({int(p.pid) for p in procs})
        ours = [p for p in procs if self.own.is_ours(int(p.pid))]
        if any(p.usedGpuMemory is None for p in ours):
            return None  # the driver hides per-process memory (Windows WDDM)
        return sum(int(p.usedGpuMemory) for p in ours)

    def _throttle(self, handle: Any) -> tuple[str, ...]:
        n = self._nvml
        getter = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            n, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        mask = self._optional(getter, handle) if getter else None
        if not mask:
            return ()
        return tuple(label for attr, bit, label in _THROTTLE_BITS if mask & int(getattr(n, attr, bit)))


def _text(value: Any) -> str:
    """Old NVML bindings return bytes, new ones str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def open_telemetry(nvml: Any | None = None, host: str | None = None) -> GpuTelemetry:
    """The NVML source when a driver and at least one GPU are there, else a ``NoGpuTelemetry``
    whose ``reason`` tells the user why (no nvidia-ml-py, no driver, no GPU)."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return NoGpuTelemetry("No GPU telemetry: nvidia-ml-py is not installed (pip install nvidia-ml-py).", host)
    try:
        source = NvmlTelemetry(nvml, host=host)
    except nvml.NVMLError as e:
        # The library's own words ("NVML Shared Library Not Found") mean nothing to most users.
        log.debug("NVML could not start: %s", e)
        return NoGpuTelemetry("No NVIDIA GPU found on this machine (no NVIDIA driver is installed or "
                              "running).", host)
    if source.gpu_count == 0:
        source.close()
        return NoGpuTelemetry("No NVIDIA GPU found on this machine (the driver reports none).", host)
    return source
