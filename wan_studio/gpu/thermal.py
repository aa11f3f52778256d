"""Thermal guard: between denoising steps, wait while a GPU the job uses is too hot.

A plain object with no thread, driver or UI of its own: it reads temperatures through a callable
(the sampler's ``latest`` in the app process, ``NvmlTelemetry.sample`` in a worker process, a fake in
tests), so it works in any process. One ``ThermalSession`` per job is the ``between_steps`` hook of
``engine.generate.generate``; its ``pauses`` list goes into the job's sidecar.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Literal, Sequence

from wan_studio.gpu.telemetry import GpuSample

log = logging.getLogger(__name__)

PauseEnd = Literal["cooled", "gpu silent", "cancelled"]
SampleReader = Callable[[], Sequence[GpuSample]]
NoteFn = Callable[[int, str], None]
Watch = frozenset[tuple[str, int]] | str | None  # GPUs of a job: exact keys, one host, or all


@dataclass(frozen=True)
class ThermalLimits:
    """Pause a job when a GPU reaches ``pause_c`` °C; resume once every watched GPU is at or below
    ``resume_c`` °C. ``poll_s`` is how often a paused job re-reads temperatures, in seconds;
    ``max_age_s`` how old a reading may be and still count."""

    pause_c: float = 83.0
    resume_c: float = 75.0
    enabled: bool = True
    poll_s: float = 1.0
    max_age_s: float = 10.0

    def __post_init__(self) -> None:
        if not 40 <= self.resume_c < self.pause_c <= 110:
            raise ValueError(
                f"thermal limits need 40 ≤ resume < pause ≤ 110 °C; got pause {self.pause_c} °C, "
                f"resume {self.resume_c} °C (e.g. --thermal-pause-c 83 --thermal-resume-c 75)"
            )
        if self.poll_s <= 0:
            raise ValueError("thermal poll interval must be > 0 s")

    def level(self, temperature_c: float | None) -> Literal["ok", "warm", "hot", "unknown"]:
        """Colour class of a temperature: ok below resume, warm up to pause, hot at or above it."""
        if temperature_c is None:
            return "unknown"
        if temperature_c >= self.pause_c:
            return "hot"
        return "warm" if temperature_c > self.resume_c else "ok"


@dataclass
class ThermalPause:
    """One pause of one job: when, after how many finished steps (0: before the first), how hot, how
    long (°C, seconds)."""

    gpu: str
    step: int
    started: str
    start_c: float
    peak_c: float
    end_c: float | None = None
    duration_s: float = 0.0
    ended: PauseEnd = "cooled"


class ThermalGuard:
    """Decides from temperature readings whether a job may take its next step.

    ``read`` returns the current samples; ``sleep`` and ``clock`` (monotonic seconds) are injectable
    so tests need no real waiting; ``now`` gives Unix seconds to age the samples.
    """

    def __init__(self, read: SampleReader, limits: ThermalLimits | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time) -> None:
        self.read = read
        self.limits = limits or ThermalLimits()
        self.sleep = sleep
        self.clock = clock
        self._now = now

    def session(self, gpus: Iterable[tuple[str, int]] | str | None = None, on_note: NoteFn | None = None,
                cancel: threading.Event | None = None) -> ThermalSession:
        """A per-job hook watching ``gpus``: (host, index) pairs, a host name (all its GPUs), or
        ``None`` (every GPU ``read`` returns)."""
        watch: Watch = gpus if gpus is None or isinstance(gpus, str) else frozenset(gpus)
        return ThermalSession(self, watch, on_note, cancel)

    def watched(self, watch: Watch) -> list[GpuSample]:
        """Fresh, answering samples of the watched GPUs."""
        now = self._now()
        return [s for s in self.read()
                if s.ok and s.temperature_c is not None and now - s.t <= self.limits.max_age_s
                and (watch is None or (s.host == watch if isinstance(watch, str) else s.key in watch))]

    def hottest(self, watch: Watch) -> GpuSample | None:
        """The hottest fresh watched sample, or ``None`` when there is none."""
        samples = self.watched(watch)
        return max(samples, key=lambda s: s.temperature_c or 0.0) if samples else None


class ThermalSession:
    """The guard applied to one job; call it with the number of finished steps between steps."""

    def __init__(self, guard: ThermalGuard, watch: Watch, on_note: NoteFn | None,
                 cancel: threading.Event | None) -> None:
        self.guard = guard
        self.watch = watch
        self.on_note = on_note or (lambda step, text: None)
        self.cancel = cancel or threading.Event()
        self.pauses: list[ThermalPause] = []
        # The same pauses as plain dicts, appended when each ends: the list object itself goes into
        # the job's sidecar before the job runs, and fills as it runs.
        self.records: list[dict[str, object]] = []

    def __call__(self, step: int) -> None:
        """Return at once when cool; otherwise block, reporting, until cool, silent or cancelled."""
        limits = self.guard.limits
        if not limits.enabled:
            return
        hot = self.guard.hottest(self.watch)
        if hot is None or hot.temperature_c is None or hot.temperature_c < limits.pause_c:
            return
        self._pause(step, hot)

    def _pause(self, step: int, hot: GpuSample) -> None:
        limits = self.guard.limits
        t0 = self.guard.clock()
        temp = float(hot.temperature_c or 0.0)
        pause = ThermalPause(hot.label, step, _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                             temp, temp)
        self.pauses.append(pause)
        log.warning("thermal pause after step %d: %s at %.0f °C (pause at %.0f °C, resume at %.0f °C)",
                    step, hot.label, temp, limits.pause_c, limits.resume_c)
        while True:
            self.on_note(step, f"paused: {hot.label} at {temp:.0f} °C, cooling")
            if self.cancel.is_set():
                pause.ended = "cancelled"
                break
            self.guard.sleep(limits.poll_s)
            hottest = self.guard.hottest(self.watch)
            if hottest is None:
                # No GPU answers any more: waiting could last forever. Let the job go on; if the GPU
                # is really gone, its next CUDA call fails with the real error.
                pause.ended = "gpu silent"
                log.warning("thermal pause ended after step %d: no temperature readings (GPU lost?)", step)
                break
            hot, temp = hottest, float(hottest.temperature_c or 0.0)
            pause.peak_c = max(pause.peak_c, temp)
            pause.end_c = temp
            if temp <= limits.resume_c:
                break
        pause.duration_s = round(self.guard.clock() - t0, 3)
        self.records.append(asdict(pause))
        if pause.ended == "cooled":
            log.info("thermal pause over after %.1f s: %s at %.0f °C", pause.duration_s, hot.label, temp)
            self.on_note(step, f"resumed: {hot.label} cooled to {temp:.0f} °C after {pause.duration_s:.0f} s")
