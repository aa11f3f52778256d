"""NVML telemetry behind the fake NVML module: readings, units, this app's share, lost GPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.gpu.fake_nvml import FakeGpu, FakeNvml
from wan_studio.gpu import GpuSample, NoGpuTelemetry, NvmlTelemetry, local_host, open_telemetry

GIB = 2**30


def test_no_driver_gives_no_gpu_source_with_plain_reason() -> None:
    source = open_telemetry(FakeNvml(driver_missing=True))
    assert isinstance(source, NoGpuTelemetry)
    assert source.sample() == []
    assert "No NVIDIA GPU found" in source.reason and "no NVIDIA driver" in source.reason
    assert "NVML" not in source.reason and "Library" not in source.reason  # jargon stays in the debug log


def test_driver_without_gpus_gives_no_gpu_source() -> None:
    source = open_telemetry(FakeNvml(gpus=[]))
    assert isinstance(source, NoGpuTelemetry)
    assert "reports none" in source.reason


def test_sample_reports_every_gpu_in_user_units() -> None:
    fake = FakeNvml([FakeGpu(used=6 * GIB, temperature=71, power_mw=287_500, util=97, sm_mhz=1755, fan=63),
                     FakeGpu(name="NVIDIA H200", total=141 * GIB, fan=None, limit_mw=None)])
    source = open_telemetry(fake)
    assert isinstance(source, NvmlTelemetry) and source.gpu_count == 2
    first, second = source.sample()
    assert (first.host, first.index, first.name, first.label) == (local_host(), 0, "NVIDIA GeForce RTX 3090", "GPU 0")
    assert first.mem_used_bytes == 6 * GIB and first.mem_total_bytes == 24 * GIB
    assert first.mem_free_bytes == 18 * GIB
    assert first.temperature_c == 71.0
    assert first.power_w == pytest.approx(287.5) and first.power_limit_w == pytest.approx(350.0)
    assert (first.utilization_pct, first.sm_clock_mhz, first.fan_pct) == (97, 1755, 63)
    # A datacenter card has no fan and here no readable power limit: None, not an error.
    assert second.name == "NVIDIA H200" and second.fan_pct is None and second.power_limit_w is None
    assert second.ok


def test_throttle_reasons_are_named() -> None:
    fake = FakeNvml([FakeGpu(throttle_mask=0x4 | 0x40)])
    (s,) = NvmlTelemetry(fake).sample()
    assert s.throttle_reasons == ("power cap", "thermal (hardware)")


def test_app_share_counts_this_process_and_its_children_only() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stranger = os.getppid()  # the shell that started pytest: not part of this app
        fake = FakeNvml([FakeGpu(used=12 * GIB, processes=[(os.getpid(), 2 * GIB), (child.pid, 1 * GIB),
                                                           (stranger, 5 * GIB)])])
        (s,) = NvmlTelemetry(fake).sample()
        assert s.app_used_bytes == 3 * GIB
    finally:
        child.kill()
        child.wait()


def test_app_share_unknown_when_driver_hides_per_process_memory() -> None:
    fake = FakeNvml([FakeGpu(processes=[(os.getpid(), None)])])
    (s,) = NvmlTelemetry(fake).sample()
    assert s.app_used_bytes is None


def test_registered_worker_pid_counts_as_ours() -> None:
    fake = FakeNvml([FakeGpu(processes=[(999_999_0, GIB)])])
    source = NvmlTelemetry(fake)
    assert source.sample()[0].app_used_bytes == 0
    source.own.add(999_999_0)
    assert source.sample()[0].app_used_bytes == GIB


def test_lost_gpu_gives_lost_sample_and_others_keep_reporting() -> None:
    fake = FakeNvml([FakeGpu(temperature=50), FakeGpu(temperature=60)])
    source = NvmlTelemetry(fake)
    source.sample()
    fake.gpus[1].lost = True
    ok, lost = source.sample()
    assert ok.ok and ok.temperature_c == 50
    assert lost.status == "lost" and lost.error == "GPU is lost" and lost.temperature_c is None
    assert lost.name == "NVIDIA GeForce RTX 3090"  # remembered from before it vanished
    fake.gpus[1].lost = False  # driver reset brought it back
    assert source.sample()[1].ok


def test_sample_round_trips_through_json_dict() -> None:
    (s,) = NvmlTelemetry(FakeNvml([FakeGpu(throttle_mask=0x4)])).sample()
    assert GpuSample.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown GPU sample field"):
        GpuSample.from_dict({**s.to_dict(), "colour": "red"})


def test_close_shuts_nvml_down() -> None:
    fake = FakeNvml()
    NvmlTelemetry(fake).close()
    assert not fake.initialised
