"""Thermal guard: limits, pause and resume between steps of a real tiny generation, lost GPUs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.gpu.fake_nvml import FakeGpu, FakeNvml
from wan_studio.engine.checkpoint import StepCheckpoints, request_key
from wan_studio.engine.generate import GenerationCancelled, Progress, generate, render
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.gpu import GpuSample, NvmlTelemetry, ThermalGuard, ThermalLimits


class ManualTime:
    """Monotonic seconds advanced by ``sleep``; ``on_sleep`` lets a test cool the GPU meanwhile."""

    def __init__(self, on_sleep=None) -> None:
        self.t = 0.0
        self.sleeps = 0
        self.on_sleep = on_sleep or (lambda: None)

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.sleeps += 1
        self.on_sleep()

    def clock(self) -> float:
        return self.t


def tiny_request(steps: int = 4) -> GenerationRequest:
    return validate(GenerationRequest(prompt="a red fox in snow", model="demo", width=64, height=64,
                                      num_frames=5, steps=steps, seed=1))


def test_limits_must_pause_above_resume() -> None:
    with pytest.raises(ValueError, match="resume < pause"):
        ThermalLimits(pause_c=75, resume_c=80)
    assert ThermalLimits().pause_c == 83 and ThermalLimits().resume_c == 75


@pytest.mark.parametrize(("temp", "level"), [(60, "ok"), (75, "ok"), (76, "warm"), (82.9, "warm"),
                                             (83, "hot"), (95, "hot"), (None, "unknown")])
def test_temperature_levels_follow_the_limits(temp: float | None, level: str) -> None:
    assert ThermalLimits().level(temp) == level


def test_cool_gpu_never_waits() -> None:
    fake = FakeNvml([FakeGpu(temperature=82)])
    t = ManualTime()
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session()
    session(1)
    assert t.sleeps == 0 and session.pauses == []


def test_hot_gpu_pauses_until_every_watched_gpu_reaches_resume() -> None:
    fake = FakeNvml([FakeGpu(temperature=50), FakeGpu(temperature=88)])

    def cool() -> None:
        fake.gpus[1].temperature -= 4

    t = ManualTime(cool)
    notes: list[tuple[int, str]] = []
    session = ThermalGuard(NvmlTelemetry(fake).sample, ThermalLimits(poll_s=2.0), sleep=t.sleep,
                           clock=t.clock).session(on_note=lambda step, text: notes.append((step, text)))
    session(7)
    # 88 → 84 → 80 → 76 → 72: four polls of 2 s; the hysteresis keeps it paused at 80 and 76.
    assert t.sleeps == 4 and fake.gpus[1].temperature == 72
    assert notes[0] == (7, "paused: GPU 1 at 88 °C, cooling")
    assert (7, "paused: GPU 1 at 76 °C, cooling") in notes
    assert notes[-1] == (7, "resumed: GPU 1 cooled to 72 °C after 8 s")
    (p,) = session.records
    assert (p["gpu"], p["step"], p["start_c"], p["peak_c"], p["end_c"], p["duration_s"], p["ended"]) == (
        "GPU 1", 7, 88.0, 88.0, 72.0, 8.0, "cooled")


def test_only_watched_gpus_count() -> None:
    fake = FakeNvml([FakeGpu(temperature=50), FakeGpu(temperature=95)])
    source = NvmlTelemetry(fake, host="pop-os")
    t = ManualTime()
    guard = ThermalGuard(source.sample, sleep=t.sleep, clock=t.clock)
    guard.session([("pop-os", 0)])(1)
    guard.session("win-pc")(1)
    assert t.sleeps == 0


def test_old_readings_do_not_pause() -> None:
    old = GpuSample("h", 0, "gpu", time.time() - 60, temperature_c=99.0)
    t = ManualTime()
    ThermalGuard(lambda: [old], sleep=t.sleep, clock=t.clock).session()(1)
    assert t.sleeps == 0


def test_disabled_guard_never_pauses() -> None:
    fake = FakeNvml([FakeGpu(temperature=99)])
    t = ManualTime()
    ThermalGuard(NvmlTelemetry(fake).sample, ThermalLimits(enabled=False), sleep=t.sleep, clock=t.clock).session()(1)
    assert t.sleeps == 0


def test_cancel_ends_a_pause() -> None:
    fake = FakeNvml([FakeGpu(temperature=90)])
    cancel = threading.Event()
    t = ManualTime(cancel.set)  # the user presses Cancel while the GPU cools
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session(cancel=cancel)
    session(2)
    assert session.records[0]["ended"] == "cancelled"


def test_gpu_lost_during_a_pause_ends_the_wait() -> None:
    fake = FakeNvml([FakeGpu(temperature=90)])

    def unplug() -> None:
        fake.gpus[0].lost = True

    t = ManualTime(unplug)
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session()
    session(3)
    assert t.sleeps == 1
    assert session.records[0]["ended"] == "gpu silent"


def test_temperature_ramp_pauses_a_tiny_generation_and_it_resumes(demo_pipe, tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(temperature=60)])
    request = tiny_request(steps=4)
    progress: list[Progress] = []

    def on_progress(p: Progress) -> None:
        progress.append(p)
        if p.stage == "denoising" and p.step == 2:
            fake.gpus[0].temperature = 86  # the card heats up under load

    def cool() -> None:
        fake.gpus[0].temperature -= 3

    t = ManualTime(cool)
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session(
        on_note=lambda step, text: on_progress(Progress("paused", step, request.steps, 0.0, note=text)))
    result = generate(demo_pipe, request, tmp_path, on_progress, between_steps=session,
                      extra_sidecar={"thermal_pauses": session.records})
    messages = [p.message for p in progress]
    paused_at = messages.index("paused: GPU 0 at 86 °C, cooling")
    assert messages[paused_at - 1] == "step 2/4" or messages[paused_at - 1].startswith("step 2/4")
    assert "paused: GPU 0 at 77 °C, cooling" in messages  # still above 75: keeps waiting
    resumed_at = next(i for i, m in enumerate(messages) if m.startswith("resumed: GPU 0 cooled to 74 °C"))
    assert messages[resumed_at + 1].startswith("step 3/4")  # the job went on by itself
    assert progress[-1].stage == "done" and result.video_path.stat().st_size > 0
    sidecar = json.loads(result.sidecar_path.read_text())
    (pause,) = sidecar["thermal_pauses"]
    assert (pause["step"], pause["start_c"], pause["end_c"], pause["ended"]) == (2, 86.0, 74.0, "cooled")


def test_gpu_disappearing_mid_run_does_not_hang_the_job(demo_pipe, tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(temperature=90)])

    def unplug() -> None:
        fake.gpus[0].lost = True

    t = ManualTime(unplug)
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session()
    result = generate(demo_pipe, tiny_request(steps=3), tmp_path, between_steps=session,
                      extra_sidecar={"thermal_pauses": session.records})
    sidecar = json.loads(result.sidecar_path.read_text())
    assert [p["ended"] for p in sidecar["thermal_pauses"]] == ["gpu silent"]  # one pause, then no readings
    assert sidecar["video"]["frames"] == 5


def test_a_job_meeting_a_hot_gpu_waits_before_its_first_step(demo_pipe, tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(temperature=90)])  # hot from an earlier job
    request = tiny_request(steps=3)
    progress: list[Progress] = []

    def cool() -> None:
        fake.gpus[0].temperature -= 8

    t = ManualTime(cool)
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session(
        on_note=lambda step, text: progress.append(Progress("paused", step, request.steps, 0.0, note=text)))
    result = generate(demo_pipe, request, tmp_path, progress.append, between_steps=session,
                      extra_sidecar={"thermal_pauses": session.records})
    stages = [p.stage for p in progress]
    assert stages.index("paused") < stages.index("denoising")  # no step ran on the hot GPU
    assert progress[stages.index("paused")].message == "paused: GPU 0 at 90 °C, cooling"
    (pause,) = json.loads(result.sidecar_path.read_text())["thermal_pauses"]
    assert (pause["step"], pause["start_c"], pause["end_c"], pause["ended"]) == (0, 90.0, 74.0, "cooled")


def test_a_run_resumed_after_its_last_step_still_waits_on_a_hot_gpu(demo_pipe, tmp_path: Path) -> None:
    # An earlier attempt was stopped after its last step (killed in its decode): the retry has
    # nothing left to denoise, so no step of its own would ever meet the guard.
    request = tiny_request(steps=3)
    cancel = threading.Event()

    def kept() -> StepCheckpoints:  # budget 1.0: a checkpoint after every step on any CPU
        return StepCheckpoints(tmp_path, request_key(request.to_dict()), budget=1.0)

    def stop(done: int) -> None:
        if done == request.steps:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after step 3 of 3"):
        render(demo_pipe, request, cancel=cancel, between_steps=stop, checkpoints=kept())
    fake = FakeNvml([FakeGpu(temperature=90)])
    t = ManualTime(lambda: setattr(fake.gpus[0], "temperature", 70))
    session = ThermalGuard(NvmlTelemetry(fake).sample, sleep=t.sleep, clock=t.clock).session()
    done = render(demo_pipe, request, between_steps=session, checkpoints=kept())
    assert done.resumed_from == 3 and done.frames.shape == (5, 64, 64, 3)
    assert [(p["step"], p["start_c"], p["ended"]) for p in session.records] == [(3, 90.0, "cooled")]
