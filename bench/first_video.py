"""The first video of an app start against a warm one, and the GPU's idle gap between queued jobs,
through the product itself: ``Studio.create`` + ``start`` as ``app.py`` does (worker process,
default model prepared at start, compile caches under the state folder), jobs submitted with
``Studio.submit``.

Two app starts on the same folders:

1. a fresh start (empty compile cache): the first job is submitted the moment the app is up
   (it waits for the model the worker is preparing), then two jobs are queued back to back: the
   first of them is the warm job, and the second's start minus the first's decode end (both on the
   worker's clock, from the sidecars) is the GPU's idle gap while the mp4 is written;
2. a restart (compile cache on disk): the first job is submitted once the worker has prepared the
   model (a user who takes that long to type a prompt);
3. with ``--third-start``, another restart where the first job is submitted the moment the app is
   up: a cold worker with the compile cache on disk, the first video of any later day.

Per job: submit → mp4, the sidecar's phases, and the status texts seen while it waited for the
model. A cold load is split as the worker measured it (``load_parts``: reading the components,
then placing them: page-locking the offloaded ones, moving the rest, hooks) beside the time model's
read and pin seconds, with the page-locking rate the run implies (re-fit ``costs.PIN_BYTES_PER_S``
from it); the compile warm-up's seconds and how long the job waited for it; the first step. At ``--steps`` (2–3) the decode is a large share of a job; ``ratio_50`` scales both jobs to
the preset's 50 steps with the warm job's s/step (compile stays in the first step). Prints one
``RESULT {json}`` line and a Markdown table.

  python3 bench/first_video.py --models /tmp/m --steps 2     # GPU (bench/run_first_video.sh)
  python bench/first_video.py --tiny                           # CPU smoke test on the demo model
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

PROMPT = "a red fox trots through fresh snow at sunrise"


def _sidecar(job: Any) -> dict[str, Any]:
    return json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())


def _row(case: str, job: Any, submitted: float, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"case": case, "status": job.status, "error": job.error}
    if job.status != "done":
        return out
    side = _sidecar(job)
    t = side.get("timings", {})
    parts = side.get("load_parts") or {}
    out.update(submit_to_mp4_s=round((job.finished_at or 0) - submitted, 2), model_was_loaded=side.get("model_was_loaded"),
               load_s=side.get("load_s"), read_s=parts.get("read_s"), place_s=parts.get("place_s"),
               read_gib=parts.get("read_gib"), warmup=side.get("compile_warmup"),
               text_s=t.get("text_s"), first_step_s=t.get("first_step_s"),
               s_per_step=t.get("s_per_step"), denoise_s=t.get("denoise_s"), decode_s=t.get("decode_s"),
               write_s=t.get("write_s"), clock=side.get("clock"), plan=side.get("placement"),
               speed=side.get("speed"), status_texts=texts,
               # submit → the worker took the job (a worker process still starting shows here)
               to_worker_s=round((job.started_at or submitted) - submitted, 2),
               # the decode's end → the job recorded done (the mp4 and sidecar written meanwhile)
               after_decode_s=round((job.finished_at or 0) - (side.get("clock") or {}).get("decoded_at", 0), 2)
               if side.get("clock") else None)
    if side.get("model_was_loaded") is False:
        out.update(_predicted_load(side))
    return out


def _predicted_load(side: dict[str, Any]) -> dict[str, Any]:
    """The time model's read and pin seconds for the plan that ran, and the page-locking rate this
    run implies (pinned bytes / measured place s): the figure to re-fit ``costs.PIN_BYTES_PER_S`` by."""
    from wan_studio.catalog.specs import get_spec
    from wan_studio.memory.estimate import load_s, pin_s, pinned_bytes
    from wan_studio.memory.plan import Placement

    plan, parts = side.get("plan") or {}, side.get("load_parts") or {}
    try:
        spec = get_spec(side["model"])
        placements = tuple(Placement(**p) for p in plan["placements"])
    except (KeyError, TypeError):
        return {}
    pin_pred = pin_s(spec, placements)
    out = {"read_s_pred": round(load_s(spec, placements) - pin_pred, 2), "pin_s_pred": round(pin_pred, 2),
           "pin_behind_s_pred": round(pin_s(spec, placements, when="behind"), 2)}
    pinned = pinned_bytes(spec, placements, "load")
    if parts.get("place_s") and pinned:
        rate = pinned / parts["place_s"]
        out["pin_gb_per_s"] = round(rate / 1e9, 2)  # an upper bound on the time: place s is more than pinning
    behind = side.get("pinning_behind") or {}
    if behind.get("s") and behind.get("pinned_bytes"):  # the model-offloaded copies, after the load
        out["pin_behind"] = dict(behind, gb_per_s=round(behind["pinned_bytes"] / behind["s"] / 1e9, 2))
    elif behind:
        out["pin_behind"] = behind
    return out


def _run(studio: Any, req: Any, case: str, timeout_s: float) -> dict[str, Any]:
    texts: list[str] = []

    def seen(p: Any) -> None:
        if p.stage == "loading" and (not texts or texts[-1] != p.message):
            texts.append(p.message)

    submitted = time.time()
    job = studio.submit(req)
    job = studio.queue.wait(job.id, timeout_s=timeout_s, on_progress=seen)
    row = _row(case, job, submitted, texts)
    print("CASE " + json.dumps(row), flush=True)
    return row


def _studio(models: Path, root: Path, model: str) -> Any:
    """The app's start as ``app.py`` serves it: the worker processes first, then the services."""
    from wan_studio.cluster.local import launch_workers
    from wan_studio.settings import Settings

    settings = Settings(models_dir=models, outputs_dir=root / "outputs", default_model=model, prepare_model=True)
    workers = launch_workers(settings)
    from wan_studio.services import Studio

    studio = Studio.create(settings, workers=workers)
    studio.start()
    return studio


def _worker_start(studio: Any, app_up_s: float) -> dict[str, Any]:
    """How the app's first worker started: seconds from its spawn to "ready" (the worker's split:
    interpreter, imports, runtime) and to its model prepared, and the app's own start beside."""
    w = studio.queue.executor._workers[0]  # noqa: SLF001 - a benchmark's look inside
    return {"app_up_s": round(app_up_s, 2), "worker_ready_s": w.ready_after_s, "worker_startup": w.startup,
            "worker_prepared_s": w.prepared_after_s}


def _wait_prepared(studio: Any, model: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if any(model in w.loaded for w in studio.queue.executor.workers()):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"the worker did not prepare {model} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Run both app starts; exit 1 when a job did not finish."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="models folder holding the model in Diffusers layout")
    p.add_argument("--model", default="ti2v-5b")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=os.environ.get("OUT", ""))
    p.add_argument("--timeout-s", type=float, default=240.0, help="per job")
    p.add_argument("--tiny", action="store_true", help="the demo model on the CPU (smoke test)")
    p.add_argument("--third-start", action="store_true",
                   help="start the app a third time and submit at once (cold worker, compile cache on disk)")
    a = p.parse_args(argv)

    model = "demo" if a.tiny else a.model
    size = dict(width=64, height=64, num_frames=5) if a.tiny else dict(width=1280, height=704, num_frames=121)
    root = Path(tempfile.mkdtemp(prefix="first-video-"))
    models = Path(a.models) if a.models else root / "models"

    def req(seed: int) -> Any:
        from wan_studio.engine.request import GenerationRequest

        return GenerationRequest(PROMPT, model=model, steps=a.steps, seed=seed, **size)

    rows: list[dict[str, Any]] = []
    t_app = time.monotonic()  # nothing heavy imported yet, as at app.py's start
    studio = _studio(models, root, model)
    try:
        up_s = time.monotonic() - t_app
        rows.append(_run(studio, req(1), "fresh app, submitted at start, empty compile cache", a.timeout_s))
        # Two jobs queued back to back: the second starts when the first's decode ends.
        j2, j3 = studio.submit(req(2)), studio.submit(req(3))
        t2 = time.time()
        done2 = studio.queue.wait(j2.id, timeout_s=a.timeout_s)
        done3 = studio.queue.wait(j3.id, timeout_s=a.timeout_s)
        rows.append(_row("warm (queued first)", done2, t2, []))
        rows.append(_row("warm (queued second)", done3, t2, []))
        for r in rows[-2:]:
            print("CASE " + json.dumps(r), flush=True)
        fresh_start = _worker_start(studio, up_s)
    finally:
        studio.close()
    gap = None
    if rows[1].get("clock") and rows[2].get("clock"):
        gap = round(rows[2]["clock"]["started_at"] - rows[1]["clock"]["decoded_at"], 3)
    t_app = time.monotonic()
    studio = _studio(models, root, model)
    restart_up_s = time.monotonic() - t_app
    try:
        prepared_s = _wait_prepared(studio, model, a.timeout_s)
        rows.append(_run(studio, req(4), "restarted app, submitted once prepared, compile cache on disk",
                         a.timeout_s))
        restart_start = _worker_start(studio, restart_up_s)
    finally:
        studio.close()
    if a.third_start:
        # The usual first video of a day: the app started again, the job submitted at once, so it
        # waits for the worker's preparation, with the compile cache of the runs before on disk.
        studio = _studio(models, root, model)
        try:
            rows.append(_run(studio, req(5), "restarted app, submitted at start, compile cache on disk",
                             a.timeout_s))
        finally:
            studio.close()

    from wan_studio.cluster.devices import worker_environment
    from wan_studio.memory import costs

    warm = rows[1]
    gpu_env = worker_environment("cuda:0")
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "model": model, "steps": a.steps, "size": size,
                              "worker_alloc_conf": {k: v for k, v in gpu_env.items() if "ALLOC_CONF" in k}
                              or os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
                              "cap_gib": os.environ.get("CAP_GIB"), "app_up_s": round(up_s, 2),
                              "prepared_after_start_s": round(prepared_s, 2), "gpu_idle_gap_s": gap,
                              "fresh_start": fresh_start, "restart_start": restart_start, "rows": rows}
    if all(r["status"] == "done" for r in rows) and warm.get("s_per_step"):
        more = (50 - a.steps) * warm["s_per_step"]
        for r in rows:
            r["ratio"] = round(r["submit_to_mp4_s"] / warm["submit_to_mp4_s"], 3)
            r["ratio_50"] = round((r["submit_to_mp4_s"] + more) / (warm["submit_to_mp4_s"] + more), 3)
    lines = ["| case | submit→mp4 s | ratio (50 steps) | model loaded | to worker s | load s (waited) | read s (pred) | "
             "place s (pin pred) | compile warm-up s | text s | 1st step s | s/step | decode s | mp4 s (background) "
             "| decode end → done s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in rows:
        if r["status"] != "done":
            lines.append(f"| {r['case']} | {r['status']}: {r['error']} |" + " |" * 13)
            continue
        w = r.get("warmup") or {}
        warmup = "–" if not w else (f"{f(w.get('s'))} (waited {f(w.get('waited_s'))})" if w.get("ran")
                                    else w.get("failed") or w.get("skipped") or "no")
        lines.append(f"| {r['case']} | {f(r['submit_to_mp4_s'])} | {f(r.get('ratio'))} ({f(r.get('ratio_50'))}) | "
                     f"{r['model_was_loaded']} | {f(r.get('to_worker_s'))} | {f(r['load_s'])} | {f(r.get('read_s'))} ({f(r.get('read_s_pred'))}) | "
                     f"{f(r.get('place_s'))} ({f(r.get('pin_s_pred'))}) | {warmup} | {f(r['text_s'])} | "
                     f"{f(r['first_step_s'])} | {f(r['s_per_step'])} | {f(r['decode_s'])} | {f(r['write_s'])} | "
                     f"{f(r.get('after_decode_s'))} |")
    print("\n".join(lines))
    print(f"GPU idle between the queued jobs: {gap} s; app up in {up_s:.1f} s; restarted app's worker had "
          f"{model} prepared {prepared_s:.1f} s after start")
    for label, st in (("fresh app", fresh_start), ("restarted app", restart_start)):
        print(f"{label}: app up {st['app_up_s']} s; its worker ready {st['worker_ready_s']} s after its start "
              f"({st['worker_startup']}), model prepared {st['worker_prepared_s']} s after its start")
    fresh = rows[0]
    if fresh["status"] == "done" and warm.get("status") == "done":
        w = fresh.get("warmup") or {}
        print(f"fresh app's first job: {fresh.get('ratio')}× the warm job at {a.steps} steps, "
              f"{fresh.get('ratio_50')}× scaled to 50 (target ≤ 1.15); waited {fresh['load_s']} s for the model "
              f"(its load: read {fresh.get('read_s')} s + place {fresh.get('place_s')} s; model "
              f"{fresh.get('read_s_pred')} + {fresh.get('pin_s_pred')} s); compile warm-up "
              f"{w.get('s') if w.get('ran') else (w.get('failed') or w.get('skipped') or 'none')} "
              f"(job waited {w.get('waited_s')} s); first step {fresh['first_step_s']} s against "
              f"{warm['first_step_s']} s warm")
    if fresh.get("pin_behind"):
        print(f"pinned after the load, in the background: {fresh['pin_behind']} (model "
              f"{fresh.get('pin_behind_s_pred')} s)")
    if fresh.get("pin_gb_per_s"):
        print(f"page-locking: {fresh['pin_gb_per_s']} GB/s measured (pinned bytes / place s) against "
              f"costs.PIN_BYTES_PER_S = {costs.PIN_BYTES_PER_S / 1e9:.2f} GB/s; worker allocator settings: "
              f"{result['worker_alloc_conf']}")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "first_video.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if all(r["status"] == "done" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
