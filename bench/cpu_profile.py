"""The CPU time model against demo jobs on this machine: per size the demo offers (and a longer
clip), how busy the CPU is (``memory.hardware.cpu_busy``: load over cores), the planner's predicted phases and the
measured ones (text, steps, decode, mp4 write, the job). The CPU profile in ``memory/costs.py``
was fitted from this output. Prints Markdown rows and one ``RESULT {json}`` line.

  python bench/cpu_profile.py            # about a minute on an idle 2-core machine
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_studio.bootstrap import bootstrap  # noqa: E402

bootstrap()

from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.catalog.tiny import build_ti2v_pipeline  # noqa: E402
from wan_studio.engine.generate import generate  # noqa: E402
from wan_studio.engine.request import GenerationRequest, validate  # noqa: E402
from wan_studio.memory.hardware import GIB, Hardware, cpu_busy  # noqa: E402
from wan_studio.memory.plan import Workload  # noqa: E402
from wan_studio.memory.planner import choose  # noqa: E402


def main() -> int:
    spec = get_spec("demo")
    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    out = Path(tempfile.mkdtemp(prefix="cpu-profile-"))
    cases = [(*size, spec.frames) for size in spec.sizes] + [(256, 256, 33)]
    rows = []
    for w, h, f in cases:
        busy = cpu_busy()
        hw = Hardware((), 16 * GIB, 12 * GIB, busy)
        plan = choose(spec, Workload(w, h, f, spec.steps, image=False), hw)
        req = validate(GenerationRequest("a kite over a beach", model="demo", width=w, height=h, num_frames=f, seed=1))
        t = time.perf_counter()
        res = generate(pipe, req, out)
        wall = time.perf_counter() - t
        tm = res.timings
        rows.append({"size": f"{w}x{h}x{f}", "cpu_busy": round(busy, 2),
                     "predicted": {k: round(v, 3) for k, v in plan.phases}, "predicted_job_s": round(plan.warm_job_s, 3),
                     "measured": {"text_s": tm.get("text_s"), "steps_s": round(tm["s_per_step"] * spec.steps, 3),
                                  "decode_s": tm["decode_s"], "write_s": tm["write_s"]},
                     "measured_job_s": round(tm["total_s"], 3), "wall_s": round(wall, 2)})
        r = rows[-1]
        print(f"| {r['size']} | {r['cpu_busy']:.2f} | {r['predicted_job_s']:.2f} → "
              f"{r['measured_job_s']:.2f} ({r['predicted_job_s'] / r['measured_job_s'] - 1:+.0%}) | "
              + " · ".join(f"{k} {r['predicted'][k]:.2f} → {r['measured'][k]:.2f}" for k in r["measured"]) + " |",
              flush=True)
    print("RESULT " + json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
