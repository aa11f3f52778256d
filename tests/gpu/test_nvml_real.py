"""The real NVML implementation on a real GPU; skipped on machines without one (CI, laptops).

Run on the GPU machine by ``python3 bench/telemetry_cost.py`` (which also runs these tests).
"""

from __future__ import annotations

import os
import time

import pytest

pynvml = pytest.importorskip("pynvml")

from wan_studio.gpu import NvmlTelemetry, TelemetrySampler, open_telemetry  # noqa: E402


def _gpu_count() -> int:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


pytestmark = pytest.mark.skipif(_gpu_count() == 0, reason="no NVIDIA GPU with a working driver here")


def test_real_gpus_give_plausible_samples() -> None:
    source = open_telemetry()
    assert isinstance(source, NvmlTelemetry)
    try:
        samples = source.sample()
        assert len(samples) == source.gpu_count >= 1
        for s in samples:
            print(s)
            assert s.ok and s.name
            assert s.mem_total_bytes and 0 < s.mem_used_bytes <= s.mem_total_bytes
            assert s.temperature_c is not None and 10 < s.temperature_c < 110
            if s.power_w is not None:
                assert 0 < s.power_w < 2000
            assert s.sm_clock_mhz is None or 0 <= s.sm_clock_mhz < 5000
    finally:
        source.close()


def test_this_process_share_is_seen_on_the_gpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    block = torch.empty(1 << 30, dtype=torch.uint8, device="cuda:0")  # 1 GiB held by this process
    torch.cuda.synchronize()
    source = NvmlTelemetry()
    try:
        s = source.sample()[0]
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(0))
        print(f"pid {os.getpid()}; NVML processes on GPU 0: {[(p.pid, p.usedGpuMemory) for p in procs]}")
        print(f"app share reported: {s.app_used_bytes}")
        # None is allowed only where the driver hides per-process memory; 0 would be a wrong answer.
        assert s.app_used_bytes is None or s.app_used_bytes >= 1 << 30
    finally:
        source.close()
        del block


def test_sampler_thread_on_real_gpus() -> None:
    sampler = TelemetrySampler(open_telemetry(), interval_s=0.1, history_s=10).start()
    try:
        time.sleep(1.0)
        assert sampler.ticks >= 5
        assert {s.index for s in sampler.latest()} == set(range(sampler.telemetry.gpu_count))
    finally:
        sampler.stop()
