"""Fakes that travel to Ray workers by value: a GPU whose temperature a test sets through a file."""

from __future__ import annotations

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
