"""The background sampler: history ring, thread, hosts, staleness."""

from __future__ import annotations

import json
import time

import pytest

from tests.gpu.fake_nvml import FakeGpu, FakeNvml
from wan_studio.gpu import GpuSample, NvmlTelemetry, TelemetrySampler


class FakeClock:
    """Unix seconds a test moves forward."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_default_history_covers_at_least_ten_minutes() -> None:
    sampler = TelemetrySampler(NvmlTelemetry(FakeNvml()))
    assert sampler.interval_s == pytest.approx(1.0)
    assert sampler.capacity * sampler.interval_s >= 600


def test_ring_keeps_the_newest_samples_only() -> None:
    clock = FakeClock()
    fake = FakeNvml([FakeGpu()])
    sampler = TelemetrySampler(NvmlTelemetry(fake, clock=clock), interval_s=1.0, history_s=600, clock=clock)
    for i in range(700):
        fake.gpus[0].temperature = i % 100
        clock.t += 1
        sampler.tick()
    (ring,) = sampler.history().values()
    assert len(ring) == 600
    assert ring[0].t == clock.t - 599 and ring[-1].t == clock.t
    assert len(next(iter(sampler.history(since_s=60).values()))) == 61
    assert sampler.latest()[0].temperature_c == 699 % 100


def test_thread_samples_about_every_interval_and_stops() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu()])
    sampler = TelemetrySampler(NvmlTelemetry(fake), interval_s=0.02, history_s=10).start()
    try:
        wait_for(lambda: sampler.ticks >= 5)
        assert [s.index for s in sampler.latest()] == [0, 1]
        fake.gpus[0].temperature = 77
        wait_for(lambda: sampler.latest()[0].temperature_c == 77)
    finally:
        sampler.stop()
    ticks = sampler.ticks
    time.sleep(0.1)
    assert sampler.ticks == ticks and not fake.initialised


def test_gpu_disappearing_while_sampling_shows_as_lost_and_sampling_goes_on() -> None:
    fake = FakeNvml([FakeGpu(temperature=50), FakeGpu(temperature=60)])
    sampler = TelemetrySampler(NvmlTelemetry(fake), interval_s=0.02, history_s=10).start()
    try:
        wait_for(lambda: len(sampler.latest()) == 2)
        fake.gpus[1].lost = True
        wait_for(lambda: not sampler.latest()[1].ok)
        fake.gpus[0].temperature = 55
        wait_for(lambda: sampler.latest()[0].temperature_c == 55)
    finally:
        sampler.stop()
    assert sampler.latest()[1].error == "GPU is lost"


def test_samples_of_other_hosts_are_ingested_beside_local_ones() -> None:
    clock = FakeClock()
    sampler = TelemetrySampler(NvmlTelemetry(FakeNvml(), host="pop-os", clock=clock), clock=clock)
    sampler.tick()
    remote = GpuSample("win-pc", 0, "NVIDIA GeForce RTX 3090", clock.t, mem_used_bytes=1, mem_total_bytes=2,
                       temperature_c=66.0)
    assert sampler.ingest([remote.to_dict()]) == 1
    # A sample claiming to be local is refused: only the local thread writes local GPUs.
    assert sampler.ingest([GpuSample("pop-os", 3, "x", clock.t)]) == 0
    latest = sampler.latest()
    assert [(s.host, s.index) for s in latest] == [("pop-os", 0), ("win-pc", 0)]
    assert latest[1].label == "win-pc/GPU 0"
    assert sampler.latest(host="win-pc") == [remote]
    clock.t += 30
    assert sampler.is_stale(latest[1])
    payload = sampler.snapshot()
    json.dumps(payload)
    assert [g["host"] for g in payload["gpus"]] == ["pop-os", "win-pc"] and payload["gpus"][1]["stale"]


def test_invalid_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        TelemetrySampler(NvmlTelemetry(FakeNvml()), interval_s=0)
