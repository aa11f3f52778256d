"""Fakes that travel to Ray workers by value: a GPU whose temperature a test sets through a file, and
a gate a worker's background mp4 writes wait at while a test holds it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.gpu.fake_nvml import FakeGpu, FakeNvml


class FlagNvml(FakeNvml):
    """One fake RTX 3090 that reads 90 °C while ``hot_flag`` exists and 50 °C otherwise, so a test
    in another process can heat and cool a worker's GPU."""

    def __init__(self, hot_flag: str) -> None:
        super().__init__([FakeGpu()])
        self.hot_flag = Path(hot_flag)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._gpu(handle)
        return 90 if self.hot_flag.exists() else 50


@dataclass(frozen=True)
class FlagTelemetryFactory:
    """``RuntimeConfig.telemetry_factory``: each worker's fake GPU carries the host name
    ``pc-<first 6 hex of its Ray node id>``, so the two nodes look like two PCs."""

    hot_flag: str

    def __call__(self):  # -> GpuTelemetry (imported lazily: this runs inside the worker)
        import ray

        from wan_studio.gpu.telemetry import NvmlTelemetry

        host = "pc-" + ray.get_runtime_context().get_node_id()[:6]
        return NvmlTelemetry(FlagNvml(self.hot_flag), host=host)


@dataclass(frozen=True)
class WriteGate:
    """``RuntimeConfig.before_write``: note that a write waits (a ``held-*`` file in ``folder``), then
    wait while ``folder/hold`` exists, so a test orders a worker's writes instead of timing them."""

    folder: str

    def __call__(self) -> None:
        folder = Path(self.folder)
        (folder / f"held-{time.time_ns()}").touch()
        deadline = time.monotonic() + 300
        while (folder / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def held(self) -> int:
        return len(list(Path(self.folder).glob("held-*")))
