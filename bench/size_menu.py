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

``--model t2v-a14b`` / ``i2v-a14b`` (Diffusers layout, ~71 GB on disk) and ``s2v-14b`` (the
official release's layout, ~46 GB, written by ``bench/s2v_folder.py``) run their own menus the same
way. ``--evict`` removes the other models' folders under ``--models`` first: the device disk holds
one large model at a time. Each case also carries ``fit_row``: the row for
``tests/data/gpu_measured.json`` (``bench/fit_table.py``).

  CAP_GIB=24 PYTHONPATH=bench/cap:$PYTHONPATH python3 bench/size_menu.py --steps 2
  python bench/size_menu.py --tiny            # CPU smoke test on the demo model (tests/bench)
  python bench/size_menu.py --tiny --model t2v-a14b   # a tiny A14B saved in Diffusers layout, loaded from disk
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
# The A14B sizes the UI offers (81 frames, 5 s at 16 fps); I2V always from an image.
MENUS: dict[str, list[tuple[str, int, int, int, bool]]] = {
    "ti2v-5b": MENU,
    "t2v-a14b": [("T2V-A14B 480p", 832, 480, 81, False), ("T2V-A14B 720p", 1280, 720, 81, False)],
    "i2v-a14b": [("I2V-A14B 480p, image", 832, 480, 81, True), ("I2V-A14B 720p, image", 1280, 720, 81, True)],
    # frames 0: as many as the speech lasts (SPEECH_S: one 80-frame chunk at 16 fps)
    "s2v-14b": [("S2V-14B 832×480", 832, 480, 0, True), ("S2V-14B 1024×704", 1024, 704, 0, True)],
}
SPEECH_S = {False: 5.0, True: 1.0}  # speech of a speech-to-video case: full size, tiny
# At tiny scale (CPU): the smallest side these models take, 5 and 9 frames.
TINY_MENUS: dict[str, list[tuple[str, int, int, int, bool]]] = {
    "demo": TINY_MENU,
    "t2v-a14b": [("tiny T2V-A14B", 256, 256, 5, False), ("tiny T2V-A14B 9 f", 256, 256, 9, False)],
    "i2v-a14b": [("tiny I2V-A14B, image", 256, 256, 5, True), ("tiny I2V-A14B 9 f, image", 256, 256, 9, True)],
    "s2v-14b": [("tiny S2V-14B", 256, 256, 0, True), ("tiny S2V-14B 320×256", 320, 256, 0, True)],
}


def free_disk_for(models_dir: Path, key: str, evict: bool) -> bool:
    """With ``evict``, remove the other catalog models' folders under ``models_dir``; then refuse,
    naming the sizes, when the disk cannot hold ``key``'s weights (its catalog size + 6 %).

    Returns True when the two experts of an A14B model must share their files (``link_experts``):
    the disk holds the model with one expert's bytes but not with both (the 1-GPU device machine's
    64 GiB disk against ~71 GB)."""
    import shutil

    from wan_studio.catalog.specs import CATALOG, get_spec

    spec = get_spec(key)
    models_dir.mkdir(parents=True, exist_ok=True)
    if evict:
        for other in CATALOG.values():
            folder = models_dir / other.folder
            if other.key != key and not other.is_demo and folder.exists():
                print(f"removing {folder} (the disk holds one large model)", flush=True)
                shutil.rmtree(folder)
    need = int(sum(c.bytes for c in spec.components) * 1.06)
    free = shutil.disk_usage(models_dir).free
    if free >= need:
        return False
    one_expert = int(sum(c.bytes for c in spec.components if c.name != "transformer_2") * 1.06)
    if "transformer_2" in {c.name for c in spec.components} and free >= one_expert:
        print(f"{spec.title} needs {need / 1e9:.1f} GB on disk and {free / 1e9:.1f} GB are free: its second "
              f"expert is saved as hard links to the first's files ({one_expert / 1e9:.1f} GB)", flush=True)
        return True
    raise SystemExit(f"{spec.title} needs {need / 1e9:.1f} GB on disk; {models_dir} has {free / 1e9:.1f} GB free")


def link_experts(folder: Path) -> None:
    """Make ``folder``'s ``transformer_2`` hard links to ``transformer``'s files (same configuration:
    the A14B experts differ only in their weights, which are random here), and name it in
    ``model_index.json`` as the first expert is named. The worker still reads, places and pins two
    experts from two folders; only the disk and the page cache hold one copy."""
    import json
    import shutil

    first, second = folder / "transformer", folder / "transformer_2"
    if second.exists():
        shutil.rmtree(second)
    second.mkdir()
    for f in first.iterdir():
        os.link(f, second / f.name)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["transformer_2"] = index["transformer"]
    index_path.write_text(json.dumps(index, indent=2))


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (a hard-linked file once)."""
    seen: dict[int, int] = {}
    for f in folder.rglob("*"):
        if f.is_file():
            st = f.stat()
            seen[st.st_ino] = st.st_size
    return sum(seen.values())


def save_random_model(models_dir: Path, key: str, tiny: bool = False, evict: bool = False) -> Path:
    """Build ``key`` at full size with random weights on the GPU (``tiny``: catalog.tiny's on the CPU)
    and save it where the worker looks: Diffusers layout, or the official release's for S2V."""
    from wan_studio.catalog.loading import model_folder
    from wan_studio.catalog.specs import get_spec

    spec = get_spec(key)
    folder = model_folder(spec, models_dir)
    done = folder / ("model_index.json" if spec.diffusers_layout else "config.json")  # written last
    if done.is_file():
        import shutil

        from wan_studio.catalog.loading import IncompleteModel, check_folder, check_s2v_folder

        try:
            (check_folder if spec.diffusers_layout else check_s2v_folder)(folder)
            return folder
        except IncompleteModel as e:
            print(f"{e}: saving it again", flush=True)
            shutil.rmtree(folder)
    linked = free_disk_for(models_dir, key, evict) if not tiny else os.environ.get("SIZE_MENU_LINK_EXPERTS") == "1"
    t0 = time.perf_counter()
    if spec.task == "s2v":
        from bench.s2v_folder import write_s2v_folder

        write_s2v_folder(folder, tiny=tiny)
    elif tiny:
        from wan_studio.catalog.tiny import build_a14b_pipeline

        build_a14b_pipeline(spec.task).save_pretrained(folder, safe_serialization=True)
        if linked:
            link_experts(folder)
    else:
        import torch

        from wan_studio.catalog.synthetic import build_pipeline

        # Built in bf16 on the GPU (transformers, UMT5; the VAE fp32): ~71 GB for A14B, which an H200
        # holds; save_pretrained writes each shard (10 GB at most) through host memory in turn.
        if linked:  # one expert built and written; the second is its files' hard links
            from wan_studio.catalog import tiny as tiny_parts
            from wan_studio.catalog.assembly import build_pipeline as assemble
            from wan_studio.catalog.synthetic import build_component

            parts = {c.name: build_component(spec, c.name, "cuda") for c in spec.components if c.name != "transformer_2"}
            pipe = assemble(spec, parts, tiny_parts.build_tokenizer(), tiny_parts.build_scheduler(spec.shift))
        else:
            pipe = build_pipeline(spec, "cuda")
        t_built = time.perf_counter()
        pipe.save_pretrained(folder, safe_serialization=True)
        if linked:
            link_experts(folder)
        del pipe
        torch.cuda.empty_cache()
        print(f"built in {t_built - t0:.0f} s", flush=True)
    took = time.perf_counter() - t0
    size = folder_bytes(folder)
    print(f"saved a random {spec.title} to {folder}: {size / 1e9:.1f} GB in {took:.0f} s "
          f"({size / 1e9 / max(took, 1e-3):.2f} GB/s)", flush=True)
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


def measured_timings(side: dict[str, Any], steps: int) -> dict[str, Any]:
    """The sidecar's timings, completed where a pipeline does not time a phase itself: the speech-to-
    video runner records denoising (text and audio encoding in it), s/step, the write and the total,
    so its first step and its decode (the last chunk's; one chunk here) are derived from those."""
    t = dict(side.get("timings", {}))
    step = t.get("s_per_step")
    if t.get("first_step_s") is None and step is not None and t.get("denoise_s") is not None:
        t["first_step_s"] = t["denoise_s"] - step * (steps - 1)
    if t.get("decode_s") is None and None not in (t.get("total_s"), t.get("denoise_s"), t.get("write_s")):
        t["decode_s"] = t["total_s"] - t["denoise_s"] - t["write_s"]
    return t


def speech_file(folder: Path, seconds: float) -> str:
    """A voiced, syllable-rate modulated tone of ``seconds`` at 16 kHz (a speech-to-video job's audio),
    loud enough to count as speech."""
    import numpy as np

    from wan_studio.engine.s2v.audio_io import SAMPLE_RATE, write_wav

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), start=1))
    return str(write_wav(folder / f"speech-{seconds:g}s.wav", 0.2 * voice * 0.5 * (1 + np.sin(2 * np.pi * 4 * t))))


def row(label: str, job: Any, side: dict[str, Any] | None, req: Any = None, new_shape: bool = False,
        command: str = "") -> dict[str, Any]:
    """One measured job beside its plan's prediction, and its ``fit_row`` for gpu_measured.json.
    Seconds and GiB."""
    out: dict[str, Any] = {"case": label, "status": job.status, "error": job.error, "outputs": list(job.outputs)}
    if side is None:
        return out
    from wan_studio.engine.generate import prediction_beside_measured

    steps = req.steps if req is not None else (side.get("request") or {}).get("steps", 2)
    t = measured_timings(side, steps)
    plan = side.get("plan") or {}
    ck = side.get("checkpoints") or {}
    run_s = t.get("total_s", 0.0)
    wall_s = (job.finished_at or 0) - (job.started_at or 0)
    step_s = t.get("s_per_step")
    beside = side.get("predicted_vs_measured") or prediction_beside_measured(plan, t, side, steps)
    out.update(
        plan=side.get("placement"), warm=side.get("model_was_loaded"),
        pred_vram_gib=max((plan.get("peak_vram_gib") or {"-": None}).values(), default=None),
        vram_alloc_gib=side.get("peak_vram_gib"), vram_reserved_gib=side.get("peak_vram_reserved_gib"),
        pred_step_s=plan.get("step_s"), step_s=step_s, pred_denoise_s=plan.get("job_s"),
        load_s=round(wall_s - run_s, 2),  # worker start, loading, pinning, placing: before the job's clock
        place_s=side.get("load_s"),  # the part of load_s spent loading, pinning and placing the model
        text_s=t.get("text_s"),
        first_step_s=t.get("first_step_s"), denoise_s=t.get("denoise_s"), decode_s=t.get("decode_s"),
        write_s=t.get("write_s"), mp4_s=t.get("mp4_s"), mux_s=t.get("mux_s"),
        mp4_written=side.get("mp4_written") or (side.get("clock") or {}).get("mp4_written"),
        speech_s=t.get("speech_s"), reference_s=t.get("reference_s"),  # speech to video, before its first step
        submit_to_mp4_s=round((job.finished_at or 0) - job.created_at, 2),
        checkpoint_share_of_step=(round(ck["copy_s"] / ck["taken"] / step_s, 5)
                                  if ck.get("taken") and step_s else None),
        pred_phases=plan.get("phases"), predicted_vs_measured=beside,
        load_parts=side.get("load_parts"), compile_warmup=side.get("compile_warmup"),  # a cold load's split
        compile_needs=side.get("compile_needs"),
        speed=side.get("speed"))
    if req is not None:
        video = side.get("video") or {}
        r2 = lambda v: None if v is None else round(v, 2)  # noqa: E731
        cap = os.environ.get("CAP_GIB")
        out["fit_row"] = {
            "harness": "worker", "gpu": f"{side.get('device')}" + (f", {cap} GiB cap" if cap else ""),
            "tflops": None, "case": label,
            "date": time.strftime("%Y-%m-%d"), "command": command, "model": req.model,
            "width": req.width, "height": req.height, "frames": req.num_frames or video.get("frames"),
            "steps": steps, "image": req.image is not None, "warm": bool(side.get("model_was_loaded")),
            "new_shape": new_shape, "plan": side.get("placement"),
            "alloc_gib": side.get("peak_vram_gib"), "reserved_gib": side.get("peak_vram_reserved_gib"),
            "s_per_step": r2(step_s), "text_s": r2(t.get("text_s")), "first_step_s": r2(t.get("first_step_s")),
            "denoise_s": r2(t.get("denoise_s")), "decode_s": r2(t.get("decode_s")),
            "load_s": None if side.get("model_was_loaded") else out["load_s"], "write_s": r2(t.get("write_s")),
        }
        if video and (video.get("width"), video.get("height")) != (req.width, req.height):
            out["fit_row"]["video_size"] = [video.get("width"), video.get("height")]
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


def tracer(label: str) -> dict[str, Any]:
    """``queue.wait`` callbacks that print, as it happens, each change of the job's status, stage
    or note and each attempt that failed (``TRACE`` lines, seconds since submit): a job that never
    ends still shows how far it got and what it retried."""
    t0 = time.monotonic()
    said: dict[str, Any] = {}

    def say(key: str, value: Any) -> None:
        if value is not None and said.get(key) != value:
            said[key] = value
            print(f"TRACE {time.monotonic() - t0:7.1f} s  {label}: {key} {value}", flush=True)

    def on_change(job: Any) -> None:
        say("status", job.status + (f" ({job.error})" if job.error else ""))
        say("attempts", getattr(job, "attempts", None))

    def on_progress(p: Any) -> None:
        say("stage", p.stage if p.stage != "denoising" else f"denoising step {p.step}/{p.total}")
        say("note", p.note)

    return {"on_change": on_change, "on_progress": on_progress}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ti2v-5b")
    p.add_argument("--steps", type=int, default=2, help="denoising steps per job (≥ 2: s/step needs two)")
    p.add_argument("--cases", default="", help="case labels separated by ';' (default: the whole menu)")
    p.add_argument("--save-only", action="store_true", help="only save the random model into --models")
    p.add_argument("--evict", action="store_true", help="remove the other models' folders under --models before "
                   "saving (the device disk holds one large model)")
    p.add_argument("--models", default="", help="models folder (default: a temp folder)")
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for size_menu.json")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per job")
    p.add_argument("--tiny", action="store_true", help="on the CPU (smoke test): the demo model for ti2v-5b, "
                   "else a tiny random one saved in the model's layout (bench/tiny_models.py)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the menu and print the table; exit 1 when a job did not finish."""
    a = parse_args(argv)
    import logging

    # the executor's own lines: a worker that died, its exit, its restart
    logging.basicConfig(level=logging.WARNING, format="LOG %(asctime)s %(name)s %(message)s")
    logging.getLogger("wan_studio.cluster").setLevel(logging.INFO)
    from wan_studio.cluster.local import LocalExecutor
    from wan_studio.cluster.runtime import RuntimeConfig
    from wan_studio.engine.request import GenerationRequest
    from wan_studio.jobs.queue import JobQueue
    from wan_studio.jobs.store import JobStore

    root = Path(tempfile.mkdtemp(prefix="size-menu-"))
    models = Path(a.models) if a.models else root / "models"
    model = "demo" if a.tiny and a.model == "ti2v-5b" else a.model
    if a.tiny and model != "demo":
        from bench import tiny_models

        os.environ.update(tiny_models.environment())  # the worker process, spawned below, shrinks too
        tiny_models.apply()
    menu = (TINY_MENUS if a.tiny else MENUS).get(model)
    if menu is None:
        raise SystemExit(f"no size menu for {model}; known: {', '.join(TINY_MENUS if a.tiny else MENUS)}")
    if a.cases:
        wanted = {c.strip() for c in a.cases.split(";")}
        menu = [m for m in menu if m[0] in wanted]
    if model != "demo":
        save_random_model(models, model, tiny=a.tiny, evict=a.evict)
        if a.save_only:
            return 0
    outputs = root / "outputs"
    queue = JobQueue(JobStore(outputs / "jobs.db"), LocalExecutor(RuntimeConfig(models_dir=str(models), outputs_dir=str(outputs)),
                                                                  ["cpu" if a.tiny else "cuda:0"]),
                     outputs)
    queue.start()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, int, int, bool]] = set()
    command = "python3 bench/size_menu.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        # the first case twice: cold (fresh worker) first, warm at the end
        for i, (label, w, h, f, image) in enumerate(menu + menu[:1]):
            speech = speech_file(root, SPEECH_S[a.tiny]) if model == "s2v-14b" else None
            req = GenerationRequest("a red fox trots through fresh snow at sunrise", model=model, width=w, height=h,
                                    num_frames=f or None, steps=a.steps, seed=i,
                                    image=start_image(root, w, h) if image else None, audio=speech)
            job = queue.wait(queue.submit(req).id, timeout_s=a.timeout_s, **tracer(label))
            side = None
            if job.status == "done":
                side = json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())
            shape = (w, h, f, image)
            rows.append(row(label + (" (warm)" if i == len(menu) else ""), job, side, req,
                            new_shape=i > 0 and shape not in seen, command=command))
            seen.add(shape)
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
