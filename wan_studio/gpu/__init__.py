"""GPU telemetry (NVML or none), the background sampler, and the thermal and VRAM guards.

Imports neither torch nor Gradio, so worker processes and benchmarks can use it on their own.
"""

from wan_studio.gpu.sampler import TelemetrySampler, make_sampler
from wan_studio.gpu.telemetry import (
    GpuSample,
    GpuTelemetry,
    NoGpuTelemetry,
    NvmlTelemetry,
    OwnProcesses,
    local_host,
    open_telemetry,
)
from wan_studio.gpu.thermal import ThermalGuard, ThermalLimits, ThermalPause, ThermalSession
from wan_studio.gpu.vram import VramCheck, check_vram

__all__ = [
    "GpuSample", "GpuTelemetry", "NoGpuTelemetry", "NvmlTelemetry", "OwnProcesses", "local_host",
    "open_telemetry", "TelemetrySampler", "make_sampler", "ThermalGuard", "ThermalLimits",
    "ThermalPause", "ThermalSession", "VramCheck", "check_vram",
]
