"""Attention kernels at Wan2.2 shapes: speed (TFLOP/s) and error against exact attention.

GPU machine (diffusers wheel carried):  python3 bench/attention.py
CPU smoke test:                          python bench/attention.py --tiny
Prints a table and one ``RESULT {json}`` line. Each backend that our chooser may pick is timed
with CUDA events (median of 10 after 3 warm-ups) and checked against fp32 exact attention.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wan_studio.engine.accel import DIFFUSERS_BACKEND, attention_error, choose_attention_backend, installed_backends  # noqa: E402

# (name, tokens, heads, head_dim): the self-attention of one transformer block per forward.
SHAPES = [
    ("TI2V-5B 1280x704x121", 27_280, 24, 128),
    ("A14B 832x480x81", 32_760, 40, 128),
    ("A14B 1280x720x81", 75_600, 40, 128),
]
TINY_SHAPES = [("tiny", 256, 2, 32)]


def time_backend(backend: str, tokens: int, heads: int, dim: int, device: str, reps: int) -> float:
    """Median seconds of one attention call."""
    import time

    from diffusers.models.attention_dispatch import dispatch_attention_fn

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(1, tokens, heads, dim, device=device, dtype=dtype) for _ in range(3))
    name = DIFFUSERS_BACKEND[backend]  # type: ignore[index]
    for _ in range(3):
        dispatch_attention_fn(q, k, v, backend=name)
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dispatch_attention_fn(q, k, v, backend=name)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            dispatch_attention_fn(q, k, v, backend=name)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU (smoke test)")
    args = ap.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    cc = torch.cuda.get_device_capability() if device == "cuda" else None
    backends = ["sdpa", "cudnn"] if device == "cuda" else ["sdpa"]
    backends += [b for b in ("flash", "flash3", "xformers") if b in installed_backends() and device == "cuda"]
    shapes = TINY_SHAPES if args.tiny else SHAPES
    rows = []
    for backend in backends:
        err = attention_error(backend, device=device, tokens=256 if args.tiny else 4096,  # type: ignore[arg-type]
                              heads=2 if args.tiny else 24, head_dim=32 if args.tiny else 128)
        for name, tokens, heads, dim in shapes:
            try:
                s = time_backend(backend, tokens, heads, dim, device, reps=3 if args.tiny else 10)
            except Exception as e:  # noqa: BLE001 - a backend unusable here is a result too
                rows.append({"backend": backend, "shape": name, "error": str(e)[:200]})
                continue
            tflops = 4 * tokens * tokens * heads * dim / s / 1e12
            rows.append({"backend": backend, "shape": name, "ms": round(s * 1000, 2),
                         "tflops": round(tflops, 1), "rel_err": round(err, 5)})
    choice = choose_attention_backend(cc)
    for r in rows:
        print(f"{r['backend']:>8} {r['shape']:<22} " + (f"{r['ms']:>9.2f} ms {r['tflops']:>7.1f} TFLOP/s "
              f"rel.err {r['rel_err']:.1e}" if "ms" in r else f"unusable: {r['error']}"))
    print("RESULT " + json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                  "chosen": choice.backend, "why": choice.why, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
