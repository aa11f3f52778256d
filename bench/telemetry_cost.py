"""Cost of one telemetry tick (reading every GPU through NVML), plus the real-NVML tests.

GPU machine (nvidia-ml-py installed; no gradio needed — the telemetry package does not import it):
    python3 bench/telemetry_cost.py
This machine / CI (no GPU; the same code path on the fake NVML of the tests):
    python bench/telemetry_cost.py --tiny

Prints one JSON line of figures (milliseconds per tick over all GPUs; target ≤ 20 ms) and then
runs ``tests/gpu/test_nvml_real.py``. Exit status is non-zero if the target is missed or a test fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wan_studio.gpu import NvmlTelemetry, TelemetrySampler, open_telemetry  # noqa: E402

TARGET_MS = 20.0


def measure(source: NvmlTelemetry, ticks: int) -> dict[str, object]:
    """Time ``ticks`` sampling passes over every GPU; figures in milliseconds."""
    sampler = TelemetrySampler(source, interval_s=1.0, history_s=900)
    for _ in range(3):  # first calls open handles and warm the driver
        sampler.tick()
    times = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        sampler.tick()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    first = sampler.latest()
    return {
        "gpus": source.gpu_count,
        "names": sorted({s.name for s in first}),
        "ticks": ticks,
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
        "max_ms": round(times[-1], 3),
        "per_gpu_median_ms": round(statistics.median(times) / max(source.gpu_count, 1), 3),
        "target_ms": TARGET_MS,
        "sample": first[0].to_dict() if first else None,
    }


def main() -> int:
    """Measure, print JSON, run the real-NVML tests."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="no GPU: measure on the tests' fake NVML (smoke test)")
    p.add_argument("--ticks", type=int, default=200)
    p.add_argument("--no-tests", action="store_true", help="only measure")
    args = p.parse_args()
    if args.tiny:
        from tests.gpu.fake_nvml import FakeGpu, FakeNvml

        source = NvmlTelemetry(FakeNvml([FakeGpu(), FakeGpu()]))
    else:
        opened = open_telemetry()
        if not isinstance(opened, NvmlTelemetry):
            print(opened.reason, file=sys.stderr)
            return 2
        source = opened
    result = measure(source, args.ticks)
    result["mode"] = "fake-nvml" if args.tiny else "nvml"
    source.close()
    print(json.dumps(result), flush=True)
    ok = result["median_ms"] <= TARGET_MS
    if not args.no_tests:
        tests = [sys.executable, "-m", "pytest", "-q", "-rs", "-s", "-p", "no:cacheprovider",
                 str(ROOT / "tests/gpu/test_nvml_real.py")]
        ok = subprocess.call(tests, cwd=ROOT) == 0 and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
