"""What the step caches buy: one job with each cache against the same job without, in one process.

Full-size random weights on the GPU, placed by the planner's plan for a ``--cap-gb`` card (the card
emulated with ``torch.cuda.set_per_process_memory_fraction``), run through the product's own render
path (``engine.generate.render``) with the caches exactly as a request applies them
(``engine.caches.plan_cache`` + ``step_cache``, default thresholds, the published MagCache ratios).
Per case: denoising seconds, speedup against no cache, and the frames' PSNR against no cache.

Random weights give the *speed* of each cache honestly for MagCache and TaylorSeer (their skip
schedule follows the ratios / the interval, not the weights) but not for the first-block cache,
whose skips depend on how much real activations change; the PSNR column says nothing about quality
on trained weights. Both caveats are printed with the results.

  python3 bench/step_cache.py --model ti2v-5b --size 1280x704x121 --steps 50 --cap-gb 24
  python bench/step_cache.py --tiny --steps 8            # CPU smoke test on the tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

import wan_studio  # noqa: E402,F401
from measure import job_arguments, psnr  # noqa: E402
from run_plan import build, hardware_for  # noqa: E402
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.engine.caches import CACHE_KINDS, MagRatios, plan_cache, step_cache  # noqa: E402
from wan_studio.engine.generate import render  # noqa: E402
from wan_studio.engine.request import GenerationRequest, RequestError  # noqa: E402
from wan_studio.memory.apply import apply_plan  # noqa: E402
from wan_studio.memory.plan import Workload  # noqa: E402
from wan_studio.memory.planner import choose  # noqa: E402

CAVEAT = ("random weights: MagCache/TaylorSeer speeds hold (their skips follow ratios / interval); the "
          "first-block cache's skips and every PSNR here do not predict trained weights")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(p)
    p.add_argument("--caches", default=",".join(CACHE_KINDS), help="comma-separated; 'off' always runs first")
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    a = p.parse_args(argv)

    spec = get_spec(a.model)
    w, h, f = (64, 64, 5) if a.tiny else (int(x) for x in a.size.split("x"))
    device = "cpu" if a.tiny else "cuda"
    pipe = build(spec, a.tiny)
    plan = None
    if not a.tiny:
        pipe.to("cpu")
        torch.cuda.empty_cache()
        if a.cap_gb:
            torch.cuda.set_per_process_memory_fraction(a.cap_gb * 2**30 / torch.cuda.get_device_properties(0).total_memory)
        plan = choose(spec, Workload(w, h, f, a.steps, image=False), hardware_for(a.cap_gb, 0.0, False))
        apply_plan(pipe, plan)
    pipe.set_progress_bar_config(disable=True)
    request = GenerationRequest(prompt="a red fox trots through fresh snow at sunrise", model=spec.key,
                                width=w, height=h, num_frames=f, steps=a.steps, seed=0).resolved()
    ratios = MagRatios()
    render(pipe, request.__class__(**{**request.to_dict(), "steps": 2}))  # warm-up: first-call costs kept out
    rows: list[dict[str, Any]] = []
    reference = None
    for kind in ["off", *[k for k in a.caches.split(",") if k and k != "off"]]:
        try:
            cache = None if kind == "off" else plan_cache(pipe, request, kind, None, ratios)  # type: ignore[arg-type]
        except RequestError as e:
            rows.append({"cache": kind, "error": str(e)})
            continue
        t0 = time.perf_counter()
        with step_cache(pipe, cache):
            done = render(pipe, request)
        row = {"cache": kind, "note": cache.note if cache else "no cache", "denoise_s": round(done.timings["denoise_s"], 2),
               "total_s": round(time.perf_counter() - t0, 2)}
        if reference is None:
            reference = (done.frames, done.timings["denoise_s"])
        else:
            row.update(speedup=round(reference[1] / done.timings["denoise_s"], 2),
                       psnr_vs_off_db=round(psnr(done.frames, reference[0]), 1))
        rows.append(row)
        print(row, flush=True)
    print("caveat:", CAVEAT)
    print("RESULT " + json.dumps({"model": spec.key, "size": f"{w}x{h}x{f}", "steps": a.steps, "device": device,
                                  "plan": plan.label if plan else "tiny on CPU", "rows": rows, "caveat": CAVEAT,
                                  "date": time.strftime("%Y-%m-%d")}))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
