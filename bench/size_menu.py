"""Every TI2V-5B size the UI offers, through the product's own queue and worker process, predicted
against measured.

A full-size random TI2V-5B is saved in Diffusers layout (``--models``) and loaded by the worker's
real loading code; each job runs in the worker process, which sees a card of ``CAP_GIB`` (set it
and put ``bench/cap`` on ``PYTHONPATH``: every process is capped, see ``bench/cap/sitecustomize.py``).
The first job meets a cold worker (start, load, pin, compile); the same request runs again at the
end, warm. Per job: the planner's prediction (peak VRAM, s/step, denoising job) beside the
measured peak VRAM (allocated and reserved), s/step and the phases (worker start + load + pin,
text + first step incl. compile, steps, decode, mp4 write, submit → mp4), and what a step
checkpoint cost as a share of a step. Prints Markdown rows and one ``RESULT {json}`` line.

  CAP_GIB=24 PYTHONPATH=bench/cap:$PYTHONPATH python3 bench/size_menu.py --steps 2
  python bench/size_menu.py --tiny            # CPU smoke test on the demo model (tests/bench)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

GIB = 2**30
# (label, width, height, frames, from an image): the TI2V-5B sizes the UI offers.
MENU: list[tuple[str, int, int, int, bool]] = [
    ("720p 5 s", 1280, 704, 121, False),
    ("720p 5 s, image", 1280, 704, 121, True),
    ("720p 10 s", 1280, 704, 241, False),
    ("portrait 720p 5 s", 704, 1280, 121, False),
    ("1080p 5 s", 1920, 1088, 121, False),
    ("1080p 5 s, image", 1920, 1088, 121, True),
    ("1080p 10 s", 1920, 1088, 241, False),
    ("1080p 10 s, image", 1920, 1088, 241, True),
    ("portrait 1080p 10 s", 1088, 1920, 241, False),
]
TINY_MENU = [("tiny", 64, 64, 5, False), ("tiny, image", 64, 64, 5, True), ("tiny 9 f", 64, 64, 9, False)]


def save_random_model(models_dir: Path, key: str) -> Path:
    """Build ``key`` at full size with random weights on the GPU and save it in Diffusers layout."""
    import torch

    from wan_studio.catalog.loading import model_folder
    from wan_studio.catalog.specs import get_spec
    from wan_studio.catalog.synthetic import build_pipeline

    spec = get_spec(key)
    folder = model_folder(spec, models_dir)
    if (folder / "model_index.json").is_file():
        return folder
    t0 = time.perf_counter()
    pipe = build_pipeline(spec, "cuda")
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    torch.cuda.empty_cache()
    print(f"saved a random {spec.title} to {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def start_image(folder: Path, width: int, height: int) -> str:
    """A gradient PNG of ``width``×``height`` (the job's start image)."""
    import numpy as np
    from PIL import Image

    path = folder / f"start-{width}x{height}.png"
    x = np.linspace(0, 255, width, dtype=np.uint8)
    img = np.stack([np.tile(x, (height, 1)), np.full((height, width), 90, np.uint8), np.tile(x[::-1], (height, 1))], -1)
    Image.fromarray(img).save(path)
    return str(path)


def row(label: str, job: Any, side: dict[str, Any] | None) -> dict[str, Any]:
    """One measured job beside its plan's prediction. Seconds and GiB."""
    out: dict[str, Any] = {"case": label, "status": job.status, "error": job.error}
    if side is None:
        return out
    t = side.get("timings", {})
    plan = side.get("plan") or {}
    ck = side.get("checkpoints") or {}
    run_s = t.get("total_s", 0.0)
    wall_s = (job.finished_at or 0) - (job.started_at or 0)
    step_s = t.get("s_per_step")
    out.update(
        plan=side.get("placement"), warm=side.get("model_was_loaded"),
        pred_vram_gib=max((plan.get("peak_vram_gib") or {"-": None}).values(), default=None),
        vram_alloc_gib=side.get("peak_vram_gib"), vram_reserved_gib=side.get("peak_vram_reserved_gib"),
        pred_step_s=plan.get("step_s"), step_s=step_s, pred_denoise_s=plan.get("job_s"),
        load_s=round(wall_s - run_s, 2),  # worker start, loading, pinning, placing: before the job's clock
        place_s=side.get("load_s"),  # the part of load_s spent loading, pinning and placing the model
        text_s=t.get("text_s"),
        first_step_s=t.get("first_step_s"), denoise_s=t.get("denoise_s"), decode_s=t.get("decode_s"),
        write_s=t.get("write_s"), submit_to_mp4_s=round((job.finished_at or 0) - job.created_at, 2),
        checkpoint_share_of_step=(round(ck["copy_s"] / ck["taken"] / step_s, 5)
                                  if ck.get("taken") and step_s else None),
        pred_phases=plan.get("phases"), predicted_vs_measured=side.get("predicted_vs_measured"),
        speed=side.get("speed"))
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """The size-menu table for docs/BENCHMARKS.md."""
    def f(v: Any, nd: int = 2) -> str:
        return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = ["| case | plan | warm | VRAM pred → alloc / reserved GiB | s/step pred → meas | load s | "
             "text+1st step s | denoise s (pred) | decode s | mp4 s | submit→mp4 s | checkpoint % of step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "done":
            lines.append(f"| {r['case']} | {r['status']}: {r.get('error') or ''} |" + " |" * 10)
            continue
        share = r["checkpoint_share_of_step"]
        lines.append(
            f"| {r['case']} | {r['plan']} | {r['warm']} | {f(r['pred_vram_gib'])} → {f(r['vram_alloc_gib'])} / "
            f"{f(r['vram_reserved_gib'])} | {f(r['pred_step_s'])} → {f(r['step_s'])} | {f(r['load_s'], 1)} | "
            f"{f(r['first_step_s'], 1)} | {f(r['denoise_s'], 1)} ({f(r['pred_denoise_s'], 1)}) | "
            f"{f(r['decode_s'], 1)} | {f(r['write_s'], 1)} | {f(r['submit_to_mp4_s'], 1)} | "
            f"{'–' if share is None else f'{100 * share:.2f}'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ti2v-5b")
    p.add_argument("--steps", type=int, default=2, help="denoising steps per job (≥ 2: s/step needs two)")
    p.add_argument("--cases", default="", help="case labels separated by ';' (default: the whole menu)")
    p.add_argument("--save-only", action="store_true", help="only save the random model into --models")
    p.add_argument("--models", default="", help="models folder (default: a temp folder)")
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for size_menu.json")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per job")
    p.add_argument("--tiny", action="store_true", help="the demo model on the CPU (smoke test)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the menu and print the table; exit 1 when a job did not finish."""
    a = parse_args(argv)
    from wan_studio.cluster.local import LocalExecutor
    from wan_studio.cluster.runtime import RuntimeConfig
    from wan_studio.engine.request import GenerationRequest
    from wan_studio.jobs.queue import JobQueue
    from wan_studio.jobs.store import JobStore

    root = Path(tempfile.mkdtemp(prefix="size-menu-"))
    models = Path(a.models) if a.models else root / "models"
    menu = TINY_MENU if a.tiny else MENU
    if a.cases:
        wanted = {c.strip() for c in a.cases.split(";")}
        menu = [m for m in menu if m[0] in wanted]
    model = "demo" if a.tiny else a.model
    if not a.tiny:
        save_random_model(models, model)
        if a.save_only:
            return 0
    outputs = root / "outputs"
    queue = JobQueue(JobStore(outputs / "jobs.db"), LocalExecutor(RuntimeConfig(models_dir=str(models), outputs_dir=str(outputs)),
                                                                  ["cpu" if a.tiny else "cuda:0"]),
                     outputs)
    queue.start()
    rows: list[dict[str, Any]] = []
    try:
        # the first case twice: cold (fresh worker) first, warm at the end
        for i, (label, w, h, f, image) in enumerate(menu + menu[:1]):
            req = GenerationRequest("a red fox trots through fresh snow at sunrise", model=model, width=w, height=h,
                                    num_frames=f, steps=a.steps, seed=i,
                                    image=start_image(root, w, h) if image else None)
            job = queue.wait(queue.submit(req).id, timeout_s=a.timeout_s)
            side = None
            if job.status == "done":
                side = json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())
            rows.append(row(label + (" (warm)" if i == len(menu) else ""), job, side))
            print("CASE " + json.dumps(rows[-1]), flush=True)
    finally:
        queue.close()
    print(markdown(rows))
    result = {"date": time.strftime("%Y-%m-%d"), "cap_gib": os.environ.get("CAP_GIB"), "steps": a.steps,
              "model": model, "rows": rows}
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "size_menu.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if all(r["status"] == "done" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
