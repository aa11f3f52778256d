"""Background sampler: reads the local GPUs about once a second on its own thread and keeps a
history ring per GPU; samples of other hosts (pushed by their workers) are ingested beside them.

Readers (the GPU panel, the thermal guard, the API) only ever read the ring under a lock, never
NVML, so a panel refresh cannot delay a denoising step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from wan_studio.gpu.telemetry import GpuSample, GpuTelemetry, local_host

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class TelemetrySampler:
    """Owns one ``GpuTelemetry`` source, its sampling thread and the history of every known GPU.

    ``interval_s`` is the sampling period in seconds; ``history_s`` how many seconds of samples each
    GPU keeps (at least 10 minutes by default: 900 s); ``stale_after_s`` after how many seconds
    without a new sample a GPU counts as silent. ``clock`` gives Unix seconds (injected in tests).
    """

    def __init__(self, telemetry: GpuTelemetry, interval_s: float = 1.0, history_s: float = 900.0,
                 stale_after_s: float = 10.0, clock: Clock = time.time) -> None:
        if interval_s <= 0 or history_s < interval_s:
            raise ValueError("telemetry interval must be > 0 s and history at least one interval long")
        self.telemetry = telemetry
        self.interval_s = interval_s
        self.history_s = history_s
        self.stale_after_s = stale_after_s
        self.capacity = math.ceil(history_s / interval_s)
        self._clock = clock
        self._rings: dict[tuple[str, int], deque[GpuSample]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick_s: float | None = None  # wall time the last local sampling pass took, seconds
        self.ticks = 0

    @property
    def host(self) -> str:
        """The local host name."""
        return self.telemetry.host

    @property
    def has_local_gpus(self) -> bool:
        """True when the local source reports at least one GPU."""
        return self.telemetry.gpu_count > 0

    @property
    def reason(self) -> str:
        """What the local source reads, or why there are no local GPUs (one sentence)."""
        return self.telemetry.reason

    def start(self) -> TelemetrySampler:
        """Start the sampling thread (a no-op without local GPUs: ingest works regardless)."""
        if self._thread is None and self.has_local_gpus:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gpu-telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and release the driver."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + 1)
            self._thread = None
        self.telemetry.close()

    def tick(self) -> list[GpuSample]:
        """Sample the local GPUs once and record the result; returns the new samples."""
        t0 = time.perf_counter()
        samples = self.telemetry.sample()
        self.last_tick_s = time.perf_counter() - t0
        self._record(samples)
        self.ticks += 1
        return samples

    def ingest(self, samples: Iterable[GpuSample | dict[str, Any]]) -> int:
        """Add samples read elsewhere (another host's worker); dicts come from ``to_dict``.

        Returns how many were added. Samples of this host are refused: the local thread owns them.
        """
        parsed = [s if isinstance(s, GpuSample) else GpuSample.from_dict(s) for s in samples]
        foreign = [s for s in parsed if s.host != self.host]
        self._record(foreign)
        return len(foreign)

    def latest(self, host: str | None = None) -> list[GpuSample]:
        """Newest sample of every known GPU (of ``host`` only, if given), local host first."""
        with self._lock:
            newest = [ring[-1] for key, ring in self._rings.items() if ring and (host is None or key[0] == host)]
        return sorted(newest, key=lambda s: (s.host != self.host, s.host, s.index))

    def age_s(self, sample: GpuSample) -> float:
        """Seconds since ``sample`` was taken."""
        return self._clock() - sample.t

    def is_stale(self, sample: GpuSample) -> bool:
        """True when ``sample`` is older than ``stale_after_s`` (its GPU went silent)."""
        return self.age_s(sample) > self.stale_after_s

    def history(self, since_s: float | None = None) -> dict[tuple[str, int], list[GpuSample]]:
        """Samples per GPU, oldest first; only the last ``since_s`` seconds when given."""
        cutoff = self._clock() - since_s if since_s is not None else -math.inf
        with self._lock:
            return {key: [s for s in ring if s.t >= cutoff] for key, ring in self._rings.items()}

    def snapshot(self) -> dict[str, Any]:
        """Current samples as a JSON-able dict (the ``/gpu_samples`` API answer)."""
        latest = self.latest()
        return {
            "host": self.host,
            "note": self.reason,
            "interval_s": self.interval_s,
            "gpus": [{**s.to_dict(), "label": s.label, "stale": self.is_stale(s)} for s in latest],
        }

    def _record(self, samples: list[GpuSample]) -> None:
        with self._lock:
            for s in samples:
                ring = self._rings.get(s.key)
                if ring is None:
                    ring = self._rings[s.key] = deque(maxlen=self.capacity)
                ring.append(s)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a driver hiccup must not end monitoring for the session
                log.exception("GPU sampling failed; trying again next tick")
            # Fixed-rate schedule; after a long stall skip ahead instead of bursting.
            next_at = max(next_at + self.interval_s, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def make_sampler(nvml: Any | None = None, interval_s: float = 1.0, history_s: float = 900.0) -> TelemetrySampler:
    """A sampler on the best local source (NVML, else none), not yet started."""
    from wan_studio.gpu.telemetry import open_telemetry

    return TelemetrySampler(open_telemetry(nvml), interval_s=interval_s, history_s=history_s)


__all__ = ["TelemetrySampler", "make_sampler", "local_host"]
