"""Cost of the live preview (``wan_studio/engine/preview.py``) per denoising step, and its extra VRAM.

GPU machine (full-size latents; ``--step`` also times one real TI2V-5B 720p CFG step, two forwards
of the full-width transformer with random weights, to compare against):
    python3 bench/preview_cost.py --step
This machine / CI (small latents on the CPU; checks the code path, numbers mean nothing):
    python bench/preview_cost.py --tiny

For each case the latents are what the pipeline holds (float32), a UniPC scheduler (the official
sampler) has taken one step so the preview reads its x0 prediction, and ``LivePreview.offer`` (the
projection on the device, the copy to the host, the JPEG written) is timed ``--reps`` times.
Prints ``RESULT {json}`` and writes ``$OUT/preview_cost.json``. Target: < 1 % of a step, a few MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wan_studio.catalog.tiny import build_scheduler  # noqa: E402
from wan_studio.engine.preview import LivePreview, linear_rgb  # noqa: E402
from wan_studio.engine.sampler import official_scheduler  # noqa: E402

# (name, latent shape (B, C, T, H, W)) at the sizes the docs benchmark; step seconds from
# docs/BENCHMARKS.md (H200, resident, no cap) when no step is timed here.
CASES = {
    "ti2v-5b 1280x704x121": ((1, 48, 31, 44, 80), 2.39),
    "a14b 1280x720x81": ((1, 16, 21, 90, 160), None),
    "a14b 832x480x81": ((1, 16, 21, 60, 104), None),
}
TINY = {"tiny 64x64x5 (48 ch)": ((1, 48, 2, 4, 4), None), "tiny 64x64x5 (16 ch)": ((1, 16, 2, 8, 8), None)}
TARGET_SHARE = 0.01


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def stepped_scheduler(latents: torch.Tensor) -> Any:
    """A UniPC scheduler (the official Wan sampler) after one step on ``latents``."""
    sched = official_scheduler(build_scheduler(5.0), 5.0)
    sched.set_timesteps(20, device=latents.device)
    sched.step(torch.randn_like(latents), sched.timesteps[0], latents, return_dict=False)
    return sched


def measure_case(shape: tuple[int, ...], device: str, reps: int, folder: Path) -> dict[str, Any]:
    """Milliseconds per ``offer`` (median, and the projection alone) and the extra VRAM in MB."""
    g = torch.Generator(device).manual_seed(0)
    latents = torch.randn(*shape, device=device, dtype=torch.float32, generator=g)
    sched = stepped_scheduler(latents)
    preview = LivePreview(folder / "x".join(map(str, shape)))
    for _ in range(3):  # warm: kernels, the map's tensors on the device, the encoder
        preview.offer(1, latents, sched)
    sync(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    offers, projections = [], []
    for i in range(reps):
        sync(device)
        t0 = time.perf_counter()
        assert preview.offer(i + 2, latents, sched), "the preview turned itself off"
        sync(device)
        offers.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        linear_rgb(sched.model_outputs[-1])
        sync(device)
        projections.append(time.perf_counter() - t0)
    extra = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else 0
    return {"latents": list(shape), "latents_mb": round(latents.numel() * 4 / 1e6, 2),
            "source": preview.source, "ms_per_step": round(statistics.median(offers) * 1000, 3),
            "ms_max": round(max(offers) * 1000, 3),
            "projection_ms": round(statistics.median(projections) * 1000, 3),
            "extra_vram_mb": round(extra / 1e6, 3), "file_kb": round(preview.path.stat().st_size / 1024, 1)}


def real_step_s(device: str, reps: int = 2) -> float:
    """Seconds of one TI2V-5B 1280×704×121 CFG step (two forwards, eager SDPA, random bf16 weights)."""
    from wan_studio.catalog.specs import get_spec

    sys.path.insert(0, str(ROOT / "bench"))
    from step_profile import build_transformer  # noqa: PLC0415

    model = build_transformer(get_spec("ti2v-5b"), None, device, tiny=False)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, 48, 31, 44, 80, device=device, dtype=torch.bfloat16, generator=g)
    t = torch.full((1,), 500.0, device=device)
    text = [torch.randn(1, 512, model.config.text_dim, device=device, dtype=torch.bfloat16, generator=g)
            for _ in range(2)]

    def step() -> None:
        with torch.inference_mode():
            for e in text:
                model(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)

    step()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    del model
    torch.cuda.empty_cache()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small latents on the CPU (smoke test)")
    p.add_argument("--step", action="store_true", help="also time one real TI2V-5B 720p step (GPU)")
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args(argv)
    device = "cpu" if a.tiny or not torch.cuda.is_available() else "cuda"
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name()
                              if device == "cuda" else "cpu", "reps": a.reps, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, step_s) in (TINY if a.tiny else CASES).items():
            row = measure_case(shape, device, a.reps, Path(tmp))
            if step_s is not None:
                row["step_s_docs"] = step_s
                row["share_of_docs_step"] = round(row["ms_per_step"] / 1000 / step_s, 5)
            result["cases"][name] = row
    if a.step and device == "cuda":
        s = real_step_s(device)
        row = result["cases"]["ti2v-5b 1280x704x121"]
        row["step_s_measured"] = round(s, 3)
        row["share_of_measured_step"] = round(row["ms_per_step"] / 1000 / s, 5)
    shares = [v for r in result["cases"].values() for k, v in r.items() if k.startswith("share_of")]
    result["meets_target"] = all(s < TARGET_SHARE for s in shares) if shares else None
    print("RESULT " + json.dumps(result))
    out = Path(os.environ.get("OUT", ROOT / "bench" / "out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "preview_cost.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res["meets_target"] in (True, None) else 1)
