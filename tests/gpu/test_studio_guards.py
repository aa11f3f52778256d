"""The guards wired into Studio: a real sampler thread, a tiny job, VRAM warnings."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.gpu.fake_nvml import FakeGpu, FakeNvml
from wan_studio.engine.generate import Progress
from wan_studio.engine.request import GenerationRequest
from wan_studio.gpu import GpuSample, NoGpuTelemetry, NvmlTelemetry, TelemetrySampler, check_vram
from wan_studio.memory.manager import ModelManager
from wan_studio.services import Studio

GIB = 2**30


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml([FakeGpu(temperature=55)])


@pytest.fixture
def guarded_studio(settings, demo_pipe, fake):
    sampler = TelemetrySampler(NvmlTelemetry(fake), interval_s=0.02, history_s=5)
    studio = Studio.create(settings, manager=ModelManager(lambda spec: (demo_pipe, "cpu")), telemetry=sampler)
    yield studio
    studio.close()


def wait_ticks(studio: Studio, n: int = 2) -> None:
    """Wait until the sampler thread has read the GPUs ``n`` more times."""
    start = studio.telemetry.ticks
    deadline = time.monotonic() + 5
    while studio.telemetry.ticks < start + n:
        assert time.monotonic() < deadline, "sampler thread stopped"
        time.sleep(0.005)


def demo_request() -> GenerationRequest:
    return GenerationRequest(prompt="waves at dusk", model="demo", width=64, height=64, num_frames=5, steps=4, seed=3)


def test_hot_gpu_pauses_a_studio_job_which_resumes_by_itself(guarded_studio: Studio, fake: FakeNvml) -> None:
    messages: list[str] = []

    def on_progress(p: Progress) -> None:
        messages.append(p.message)
        if p.stage == "denoising" and p.step == 1:
            fake.gpus[0].temperature = 90
            # Let the sampler thread see it before the guard looks (it reads samples, not NVML).
            wait_ticks(guarded_studio)
        if p.stage == "paused":
            fake.gpus[0].temperature -= 5  # cooling while the job waits

    result = guarded_studio.run(demo_request(), on_progress=on_progress)
    assert "paused: GPU 0 at 90 °C, cooling" in messages
    assert any(m.startswith("resumed: GPU 0 cooled to") for m in messages)
    assert messages[-1] == "done"
    sidecar = json.loads(result.sidecar_path.read_text())
    (pause,) = sidecar["thermal_pauses"]
    assert pause["step"] == 1 and pause["start_c"] == 90 and pause["end_c"] <= 75 and pause["ended"] == "cooled"
    assert "paused_s" in sidecar["timings"]


def test_cool_job_records_no_pauses(guarded_studio: Studio) -> None:
    result = guarded_studio.run(demo_request())
    assert json.loads(result.sidecar_path.read_text())["thermal_pauses"] == []


def test_vram_warning_when_other_programs_hold_the_gpu(guarded_studio: Studio, fake: FakeNvml) -> None:
    fake.gpus[0].used = 20 * GIB
    fake.gpus[0].processes = [(os.getppid(), 20 * GIB)]  # someone else's program
    wait_ticks(guarded_studio)
    (warning,) = guarded_studio.vram_warnings(GenerationRequest(prompt="x", model="ti2v-5b"))
    assert "other programs hold 20.0 GiB" in warning and "GPU 0" in warning
    fake.gpus[0].used, fake.gpus[0].processes = 2 * GIB, []
    wait_ticks(guarded_studio)
    assert guarded_studio.vram_warnings(GenerationRequest(prompt="x", model="ti2v-5b")) == []
    assert guarded_studio.vram_warnings(demo_request()) == []  # the demo runs on the CPU


def test_memory_this_app_holds_counts_as_available() -> None:
    s = GpuSample("h", 0, "RTX 3090", 0.0, mem_used_bytes=22 * GIB, mem_total_bytes=24 * GIB,
                  mem_free_bytes=2 * GIB, app_used_bytes=21 * GIB)
    check = check_vram(20 * GIB, [s])
    assert check is not None and check.fits and check.available_bytes == 23 * GIB
    unknown = GpuSample("h", 0, "RTX 3090", 0.0, mem_used_bytes=22 * GIB, mem_total_bytes=24 * GIB,
                        mem_free_bytes=2 * GIB)
    check = check_vram(20 * GIB, [unknown])
    assert check is not None and not check.fits and "only 2.0 GiB is free" in check.message
    assert check_vram(GIB, [GpuSample("h", 0, "x", 0.0, status="lost")]) is None


def test_without_gpus_jobs_run_unguarded(settings, demo_pipe) -> None:
    sampler = TelemetrySampler(NoGpuTelemetry("No NVIDIA GPU found on this machine."))
    studio = Studio.create(settings, manager=ModelManager(lambda spec: (demo_pipe, "cpu")), telemetry=sampler)
    result = studio.run(demo_request())
    assert "thermal_pauses" not in json.loads(result.sidecar_path.read_text())
    studio.close()
