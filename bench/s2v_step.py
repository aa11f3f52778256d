"""Step time, peak memory and MFU of Wan Studio's S2V-14B transformer, full size, random weights.

One chunk (80 frames = 20 latent frames) with the 19-latent motion context, guidance on (two
forwards per step), at ``--width``×``--height`` (defaults 832×480; 1024×704 is the official
default area). The transformer is built on the meta device, materialised on the GPU with
``to_empty`` and filled with random numbers; ``--cap-gb`` then emulates a smaller card.

Recipes (``--recipe``):
  resident  bf16 weights on the GPU (needs ~33 GiB: the no-cap reference)
  fp8       fp8 weight storage, bf16 compute (diffusers layerwise casting), resident (~16.5 GiB)
  group     bf16 weights in pinned CPU memory, block-level group offload with CUDA-stream prefetch,
            placed as the product places it (the layers around the blocks stay on the GPU)
  group-diffusers  the same with diffusers' defaults (those layers move before and after every call)

Examples (GPU):  python3 bench/s2v_step.py --recipe fp8 --cap-gb 24
                 python3 bench/s2v_step.py --recipe group --cap-gb 24 --width 1024 --height 704
CPU smoke test:  python bench/s2v_step.py --tiny
Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wan_studio.engine.s2v.config import FULL_14B, TINY, S2VConfig  # noqa: E402
from wan_studio.engine.s2v.transformer import S2VTransformer  # noqa: E402


def build(config: S2VConfig, device: str, dtype: torch.dtype) -> S2VTransformer:
    """Materialise the transformer directly on ``device`` with random weights (no CPU copy)."""
    with torch.device("meta"):
        model = S2VTransformer(config)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model.eval().requires_grad_(False)


def flops_per_forward(c: S2VConfig, video: int, total: int, text: int, frames: int) -> float:
    """Matmul FLOPs of one forward: ``video`` noisy tokens, ``total`` tokens with ref + motion."""
    d, f = c.dim, c.ffn_dim
    block = (2 * 4 * d * d * total  # self-attention projections
             + 2 * 2 * total * total * d  # scores + weighted sum
             + 2 * 2 * d * d * total + 2 * 2 * d * d * text + 2 * 2 * total * text * d  # cross-attention
             + 2 * 2 * d * f * total)  # feed-forward
    inject = 2 * 4 * d * d * video + 2 * 2 * d * 2 * d * frames  # audio q/o (+k/v tiny) and adaptive norm
    return c.num_layers * block + len(c.audio_inject_layers) * inject


def matmul_peak(device: str) -> float:
    """Measured bf16 matmul rate (TFLOP/s): 8192³, 10 repetitions after 3 warm-ups."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t) / 1e12


def apply_recipe(model: S2VTransformer, recipe: str, device: str) -> None:
    """Put the weights where the recipe wants them."""
    if recipe == "fp8":
        from diffusers.hooks import apply_layerwise_casting

        apply_layerwise_casting(model, storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16,
                                skip_modules_pattern=("norm", "patch_embedding", "cond_encoder", "head",
                                                      "trainable_cond_mask", "casual_audio_encoder"))
    elif recipe == "group":  # the product's block offload (memory.apply.place_component)
        from wan_studio.memory.apply import place_component
        from wan_studio.memory.plan import Placement

        model.to("cpu")
        # On the CPU (--tiny) this only exercises the hooks: there is no stream and nothing moves.
        place_component(model, Placement("transformer", device, "bf16", "group_offload"))
    elif recipe == "group-diffusers":  # diffusers' defaults: the layers around the blocks move every call
        from diffusers.hooks import apply_group_offloading

        model.to("cpu")
        apply_group_offloading(model, onload_device=torch.device(device), offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1, use_stream=device == "cuda")
    elif recipe != "resident":
        raise SystemExit(f"unknown recipe {recipe!r}")


def inputs(c: S2VConfig, width: int, height: int, frames: int, text: int, device: str, dtype: torch.dtype) -> dict:
    h, w = height // 8, width // 8
    g = dict(device=device, dtype=dtype)
    return dict(latents=torch.randn(1, c.in_dim, frames // 4, h, w, **g),
                context=torch.randn(1, text, c.text_dim, **g),
                ref_latents=torch.randn(1, c.in_dim, 1, h, w, **g),
                motion_latents=torch.randn(1, c.in_dim, c.motion_latent_frames, h, w, **g),
                cond_latents=torch.zeros(1, c.cond_dim, frames // 4, h, w, **g),
                audio=torch.randn(1, c.audio_layers, c.audio_dim, frames, **g))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="fp8", choices=["resident", "fp8", "group", "group-diffusers"])
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=80, help="frames per chunk (multiple of 4)")
    ap.add_argument("--text-tokens", type=int, default=120)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (each = 2 forwards, guidance on)")
    ap.add_argument("--cap-gb", type=float, default=None, help="emulate a card of this many GiB")
    ap.add_argument("--attention", default=None, help="torch SDPA backend: flash | cudnn | efficient | math")
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU, any recipe (smoke test)")
    args = ap.parse_args()

    if args.tiny:
        config, device, dtype = TINY, "cpu", torch.bfloat16
        args.width, args.height, args.frames, args.steps = 64, 64, 16, 2
    else:
        config, device, dtype = FULL_14B, "cuda", torch.bfloat16
    cuda = device == "cuda"
    t0 = time.perf_counter()
    model = build(config, device, dtype)
    built_s = time.perf_counter() - t0
    peak_tflops = matmul_peak(device) if cuda else None
    apply_recipe(model, args.recipe, device)
    if cuda:
        torch.cuda.empty_cache()
        if args.cap_gb:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(args.cap_gb * 2**30 / total)
        torch.cuda.reset_peak_memory_stats()
    x = inputs(config, args.width, args.height, args.frames, args.text_tokens, device, dtype)
    timestep = torch.tensor([900.0], device=device)
    backend = None
    if args.attention:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                               "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[args.attention])
    times: list[float] = []
    result: dict = {"recipe": args.recipe, "width": args.width, "height": args.height, "frames": args.frames,
                    "cap_gb": args.cap_gb, "device": torch.cuda.get_device_name() if cuda else "cpu",
                    "build_s": round(built_s, 2)}
    try:
        with torch.inference_mode(), (backend or contextlib.nullcontext()):
            for _ in range(args.steps + 1):
                t = time.perf_counter()
                for audio_scale in (1.0, 0.0):  # conditional and unconditional pass, as in sampling
                    out = model(x["latents"], timestep, x["context"], x["ref_latents"], x["motion_latents"],
                                x["cond_latents"], x["audio"] * audio_scale)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        result["ok"] = bool(torch.isfinite(out).all()) or "non-finite output (random weights)"
    except torch.OutOfMemoryError as e:
        result["ok"] = False
        result["error"] = f"OOM: {str(e).splitlines()[0]}"
    h, w = args.height // 16, args.width // 16
    video = args.frames // 4 * h * w
    motion = (h * w) + (args.height // 32) * (args.width // 32) + 4 * (args.height // 64) * (args.width // 64)
    total = video + h * w + motion
    flops = 2 * flops_per_forward(config, video, total, args.text_tokens, args.frames // 4)
    if times:
        step = statistics.median(times[1:]) if len(times) > 1 else times[0]
        result.update(first_step_s=round(times[0], 3), s_per_step=round(step, 3), tokens=total,
                      tflop_per_step=round(flops / 1e12, 1), achieved_tflops=round(flops / step / 1e12, 1))
        if peak_tflops:
            result.update(matmul_peak_tflops=round(peak_tflops, 1), mfu=round(flops / step / 1e12 / peak_tflops, 3))
    if cuda:
        result.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
