"""Where a fresh worker's compile warm-up goes: one process per case, each with empty compile caches.

The warm-up (``engine.warmup.run_throwaway``) compiles a one-block transformer of the model's
configuration at the job's shapes, set up as the real one is (``speed_preparer``). A fresh app's
first job waits for it (docs/BENCHMARKS.md "First video"). Cases, each a fresh Python process:

- ``lazy``: as a worker does it today; Inductor starts its pool of compile processes when the
  backend is first called (after dynamo's trace).
- ``early-pool``: the pool of compile processes started first, then the worker's imports, then the
  warm-up (what a worker can do at its start).
- ``one-thread``: ``TORCHINDUCTOR_COMPILE_THREADS=1`` (every kernel compiled in the process).
- ``cache-on-disk``: ``lazy`` again on the caches the first case left (a restarted app).

Each prints one ``RESULT`` JSON line: seconds to import, the warm-up's seconds, dynamo's compile
phases (``torch._dynamo.utils.compile_times``) and when the pool was ready.

  python3 bench/warmup_cost.py --all [--size 1280x704x121] [--cap-gb 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = ("lazy", "early-pool", "one-thread", "cache-on-disk")


def one(case: str, size: str, cap_gb: float) -> dict:
    t0 = time.perf_counter()
    import torch

    pool_started = None
    if case == "early-pool":
        from torch._inductor.async_compile import maybe_warm_pool

        maybe_warm_pool()
        pool_started = time.perf_counter() - t0
    # the worker runtime's imports (diffusers, transformers, the models' code)
    from wan_studio.bootstrap import bootstrap

    bootstrap()
    import wan_studio.cluster.runtime  # noqa: F401
    import wan_studio.memory.loaders  # noqa: F401
    from diffusers import WanTransformer3DModel

    from wan_studio.catalog import synthetic
    from wan_studio.catalog.specs import get_spec
    from wan_studio.engine.accel import SpeedOptions
    from wan_studio.engine.warmup import run_throwaway, shapes_for, speed_preparer
    from wan_studio.memory import costs
    from wan_studio.memory.hardware import GIB

    imports_s = time.perf_counter() - t0
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * GIB / total), 0)
    spec = get_spec("ti2v-5b")
    config = dict(synthetic.TRANSFORMER_CONFIGS[spec.key] | synthetic.TRANSFORMER_COMMON)
    w, h, f = (int(x) for x in size.split("x"))
    shapes = shapes_for(config, w, h, f, costs.arch(spec).spatial_down, False)
    prepare = speed_preparer({"model_offload"}, "bf16", SpeedOptions())
    t1 = time.perf_counter()
    ran = run_throwaway(WanTransformer3DModel, config, shapes, prepare, "cuda:0", torch.bfloat16)
    warm_s = time.perf_counter() - t1
    from torch._dynamo.utils import compile_times
    from torch._inductor.async_compile import AsyncCompile

    ready = AsyncCompile._ready_future
    phases = compile_times(repr="csv", aggregate=True)
    return {"case": case, "ran": ran, "imports_s": round(imports_s, 2), "warmup_s": round(warm_s, 2),
            "pool_started_s": None if pool_started is None else round(pool_started, 2),
            "pool_ready": bool(ready is not None and ready.done()),
            "compile_threads": torch._inductor.config.compile_threads,
            "phases": dict(zip(phases[0], (round(float(x), 2) for x in phases[1]))) if phases else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=CASES)
    ap.add_argument("--all", action="store_true", help="every case, each in a fresh process")
    ap.add_argument("--size", default="1280x704x121")
    ap.add_argument("--cap-gb", type=float, default=24.0)
    a = ap.parse_args()
    if a.case:
        print("RESULT " + json.dumps(one(a.case, a.size, a.cap_gb)), flush=True)
        return
    root = Path(tempfile.mkdtemp(prefix="warmup-cost-"))
    for case in CASES:
        cache = root / ("lazy" if case == "cache-on-disk" else case)  # the restarted app reuses lazy's
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
        if case == "one-thread":
            env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        run = "cache-on-disk" if case == "cache-on-disk" else case
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--case", "lazy" if run == "cache-on-disk" else run,
                              "--size", a.size, "--cap-gb", str(a.cap_gb)], env=env, capture_output=True,
                             text=True, timeout=400)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        got = json.loads(line[7:]) if line else {"error": out.stderr[-2000:]}
        got.update(case=case, process_s=round(time.perf_counter() - t0, 2))
        print("RESULT " + json.dumps(got), flush=True)


if __name__ == "__main__":
    main()
