"""Where a TI2V-5B 720p job's time goes, and what our speed options buy (issue "Speed").

Full-size random weights on the GPU. Two parts, each timed with CUDA synchronisation:
  decode   the Wan2.2 VAE decode of one 1280×704×121 latent: fp32 (the default, tiled as our
           plans run it), fp32 untiled, bf16 tiled (a bf16 copy of the VAE) and bf16 autocast tiled
           (what the Advanced tab's "VAE decode: bf16" does), with their error against fp32.
  step     one CFG denoising step (two transformer forwards) of the TI2V-5B transformer: eager vs
           ``compile_repeated_blocks`` (regional torch.compile), outputs compared.
GPU:  python3 bench/speed.py [--parts decode,step] [--frames 121]
CPU smoke test:  python bench/speed.py --tiny
Prints a table and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import wan_studio  # noqa: E402,F401
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.engine.accel import decode_precision  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup: bool = True) -> tuple[float, object]:
    """Median seconds of ``reps`` calls (after one warm-up unless told not to) and the last result."""
    out = fn() if warmup else None
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def decode_part(device: str, tiny: bool, frames: int) -> list[dict]:
    from wan_studio.catalog import synthetic, tiny as tiny_models

    vae = tiny_models.build_wan22_vae().to(device) if tiny else synthetic.build_component(get_spec("ti2v-5b"), "vae", device)
    w, h = (64, 64) if tiny else (1280, 704)
    z = torch.randn(1, 48, (frames - 1) // 4 + 1, h // 16, w // 16, device=device, generator=torch.Generator(device).manual_seed(0))
    rows = []

    default_tile = (vae.tile_sample_min_height, vae.tile_sample_stride_height)

    def run(dtype: torch.dtype, tile: tuple[int, int] | None, autocast: bool = False):
        vae.to(dtype)
        if tile is None:
            vae.disable_tiling()
        else:
            vae.enable_tiling(tile[0], tile[0], tile[1], tile[1])
        holder = types.SimpleNamespace(vae=vae)
        with torch.inference_mode(), decode_precision(holder, "bf16" if autocast else "fp32"):
            return holder.vae.decode(z.to(dtype), return_dict=False)[0].float().clamp(-1, 1)

    def peak_reset() -> None:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None

    with torch.inference_mode():  # a small decode first, so cuDNN set-up is not charged to the fp32 case
        vae.decode(z[:, :, :2, :4, :4], return_dict=False)
    peak_reset()
    ref_s, ref = timed(lambda: run(torch.float32, default_tile), device, 1, warmup=tiny)
    rows.append({"part": "decode", "case": f"fp32 tiled {default_tile[0]}/{default_tile[1]} (default)",
                 "s": round(ref_s, 2), "peak_gib": peak()})
    # Bigger tiles overlap less (the default 256/192 decodes ~1.65× the pixels of a 1280×704 frame).
    big = [(384, 320), (512, 448)] if not tiny else [(48, 32)]
    cases = [("fp32 untiled", torch.float32, None, False), ("bf16 copy, tiled", torch.bfloat16, default_tile, False),
             ("bf16 autocast tiled (the VAE decode bf16 option)", torch.float32, default_tile, True)]
    cases += [(f"fp32 tiled {a}/{b}", torch.float32, (a, b), False) for a, b in big]
    cases += [(f"bf16 autocast tiled {a}/{b}", torch.float32, (a, b), True) for a, b in big]
    cases += [("bf16 autocast untiled", torch.float32, None, True)]
    only = os.environ.get("DECODE_CASES")  # substring filter, e.g. "autocast" (time budget on the GPU)
    for name, dtype, tile, autocast in cases:
        if only and not any(k in name for k in only.split(",")):
            continue
        peak_reset()
        try:
            s, out = timed(lambda: run(dtype, tile, autocast), device, 1, warmup=tiny)
        except torch.OutOfMemoryError:
            rows.append({"part": "decode", "case": name, "error": "OOM"})
            continue
        err = float((out - ref).abs().max())
        psnr = float(10 * torch.log10(4 / ((out - ref) ** 2).mean().clamp_min(1e-12)))
        rows.append({"part": "decode", "case": name, "s": round(s, 2), "speedup": round(ref_s / s, 2),
                     "max_abs_err": round(err, 4), "psnr_db": round(psnr, 1), "peak_gib": peak()})
        print(rows[-1], flush=True)
        del out
    vae.enable_tiling(default_tile[0], default_tile[0], default_tile[1], default_tile[1])
    vae.to(torch.float32)
    return rows


def step_part(device: str, tiny: bool, frames: int) -> list[dict]:
    from wan_studio.catalog import synthetic, tiny as tiny_models

    if tiny:
        model = tiny_models.build_transformer(48, 48).to(device)
        w, h, text_dim, dtype = 64, 64, 32, torch.float32
    else:
        model = synthetic.build_component(get_spec("ti2v-5b"), "transformer", device)
        w, h, text_dim, dtype = 1280, 704, 4096, torch.bfloat16
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, 48, (frames - 1) // 4 + 1, h // 16, w // 16, device=device, dtype=dtype, generator=g)
    t = torch.full((1,), 500.0, device=device)
    text = [torch.randn(1, 512 if not tiny else 16, text_dim, device=device, dtype=dtype, generator=g) for _ in range(2)]

    def step():
        with torch.inference_mode():
            return [model(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0] for e in text]

    eager_s, eager = timed(step, device, 2 if tiny else 3)
    model.compile_repeated_blocks(fullgraph=True, **({"backend": "eager"} if tiny else {}))
    t0 = time.perf_counter()
    step()
    sync(device)
    compile_s = time.perf_counter() - t0
    comp_s, comp = timed(step, device, 2 if tiny else 3)
    rel = max(float((a.float() - b.float()).norm() / b.float().norm()) for a, b in zip(comp, eager))
    return [{"part": "step", "case": "eager (CFG: 2 forwards)", "s": round(eager_s, 3)},
            {"part": "step", "case": "compiled repeated blocks", "s": round(comp_s, 3),
             "speedup": round(eager_s / comp_s, 3), "compile_s": round(compile_s, 1), "rel_err": round(rel, 5)}]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--parts", default="decode,step")
    ap.add_argument("--frames", type=int, default=121)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    frames = 5 if a.tiny else a.frames
    rows: list[dict] = []
    for part in a.parts.split(","):
        new = (decode_part if part == "decode" else step_part)(device, a.tiny, frames)
        for r in new:
            if part != "decode":  # the decode part prints each case as it ends
                print(r, flush=True)
        rows += new
    print("RESULT " + json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
