"""Where one denoising step's GPU time goes: attention, matmuls, fused elementwise work, the rest.

Builds a full-width transformer with random weights (``--layers`` keeps only the first N blocks, so
an A14B expert's 720p block can be measured without its 28 GB of weights), then times one CFG step
(two forwards, scalar timestep) per variant and profiles one more with ``torch.profiler``:

  eager:sdpa       PyTorch's default attention, no compile
  compiled:cudnn   regional ``torch.compile`` of the blocks, cuDNN attention forced
  compiled:sdpa+qkv  ... with the q/k/v projections fused into one matmul
  compiled:sdpa+gelu ... with the feed-forward GELU in the matmul epilogue (``accel.fuse_ffn_gelu``)
  group:compiled:cudnn  the blocks streamed from the CPU (diffusers block offload with prefetch)
  grouptop:compiled:cudnn  ... with the layers around the blocks kept on the GPU (the product's way)

Per variant: median step of ``--reps`` after a warm-up, MFU against the bf16 matmul peak measured in
the same run, GPU time per kernel class (``attention``, ``matmul``, ``triton`` = compiled elementwise
and norms, ``other``), GPU idle within the step, the attention kernels' own rate, and the largest
kernels. Order matters: eager variants must come before the first compiled one, ``+gelu`` ones
last, and one process runs either resident or streamed variants.

  python3 bench/step_profile.py --model ti2v-5b --size 1280x704x121 \
      --variants eager:sdpa,compiled:cudnn,compiled:sdpa,compiled:sdpa+qkv
  python3 bench/step_profile.py --model t2v-a14b --size 1280x720x81 --layers 4 \
      --variants eager:cudnn,compiled:cudnn,compiled:sdpa
  python3 bench/step_profile.py --model t2v-a14b --size 1280x720x81 --layers 4 \
      --variants grouptop:eager:sdpa,grouptop:compiled:sdpa
  python bench/step_profile.py --tiny            # CPU smoke test
Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from measure import matmul_peak_tflops, sync  # noqa: E402
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.engine.accel import DIFFUSERS_BACKEND, fuse_ffn_gelu  # noqa: E402
from wan_studio.memory.apply import keep_top_level_on_gpu  # noqa: E402
from wan_studio.memory import costs  # noqa: E402

# Kernel name fragments per class, checked in this order (cuDNN's attention kernels carry "sm90"
# too, so attention is matched before matmuls).
KERNEL_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("triton", ("triton",)),  # first: fused kernels carry the names of the ops they fused
    ("attention", ("fmha", "flash", "sdpa", "attention", "attn", "cudnn")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "sm90_", "sm80_", "cublas")),
)


def kernel_class(name: str) -> str:
    """``attention``, ``matmul``, ``triton`` or ``other`` for a CUDA kernel name."""
    low = name.lower()
    for cls, parts in KERNEL_CLASSES:
        if any(p in low for p in parts):
            return cls
    return "other"


def build_transformer(spec: Any, layers: int | None, device: str, tiny: bool) -> torch.nn.Module:
    """The model's transformer at full width (first ``layers`` blocks only when given)."""
    if tiny:
        from wan_studio.catalog import tiny as tiny_models

        return tiny_models.build_transformer(48, 48).to(device)
    from diffusers import WanTransformer3DModel

    from wan_studio.catalog.synthetic import TRANSFORMER_COMMON, TRANSFORMER_CONFIGS, materialize

    config = TRANSFORMER_CONFIGS[spec.key] | TRANSFORMER_COMMON
    if layers:
        config = {**config, "num_layers": layers}
    return materialize(lambda: WanTransformer3DModel(**config), device, torch.bfloat16, 0)


def set_variant(model: torch.nn.Module, backend: str, fused: bool, gelu: bool) -> None:
    """Attention backend, q/k/v fusion and the fused GELU epilogue (cannot be undone) of every block."""
    model.set_attention_backend(DIFFUSERS_BACKEND[backend])  # type: ignore[operator]
    if gelu:
        fuse_ffn_gelu(model)
    for block in model.blocks:  # type: ignore[union-attr]
        for attn in (block.attn1, block.attn2):
            if fused and not getattr(attn, "fused_projections", False):
                attn.fuse_projections()
            elif not fused and getattr(attn, "fused_projections", False):
                attn.unfuse_projections()


def profile_step(step: Any) -> dict[str, Any]:
    """Kernel time per class, idle time and the biggest kernels of one call of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        step()
        sync()
        wall = time.perf_counter() - t0
    per_class: dict[str, float] = {"attention": 0.0, "matmul": 0.0, "triton": 0.0, "other": 0.0}
    kernels: list[tuple[float, str, int]] = []
    for ev in prof.key_averages():
        t = getattr(ev, "self_device_time_total", 0.0) or 0.0
        if t <= 0 or getattr(ev, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        per_class[kernel_class(ev.key)] += t / 1e6
        kernels.append((t / 1e6, ev.key, ev.count))
    busy = sum(per_class.values())
    kernels.sort(reverse=True)
    return {"wall_s": round(wall, 4), "busy_s": round(busy, 4), "idle_s": round(max(wall - busy, 0.0), 4),
            "class_s": {k: round(v, 4) for k, v in per_class.items()},
            "top": [{"s": round(t, 4), "calls": n, "kernel": k[:90]} for t, k, n in kernels[:10]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ti2v-5b")
    p.add_argument("--size", default="1280x704x121", help="WxHxF")
    p.add_argument("--layers", type=int, default=0, help="keep only the first N blocks (0: all)")
    p.add_argument("--variants", default="eager:sdpa,compiled:cudnn,compiled:sdpa")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    a = p.parse_args(argv)

    spec = get_spec(a.model)
    device = "cpu" if a.tiny else "cuda"
    w, h, f = (64, 64, 5) if a.tiny else (int(x) for x in a.size.split("x"))
    model = build_transformer(spec, a.layers or None, device, a.tiny)
    dtype = next(model.parameters()).dtype
    cfg = model.config
    n_layers = len(model.blocks)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, cfg.in_channels, (f - 1) // 4 + 1, h // (16 if spec.vae == "wan2.2" else 8),
                    w // (16 if spec.vae == "wan2.2" else 8), device=device, dtype=dtype, generator=g)
    t = torch.full((1,), 500.0, device=device)
    text = [torch.randn(1, 16 if a.tiny else 512, cfg.text_dim, device=device, dtype=dtype, generator=g)
            for _ in range(2)]
    n_tokens = x.shape[2] * (x.shape[3] // cfg.patch_size[1]) * (x.shape[4] // cfg.patch_size[2])
    arch = costs.arch(spec)
    flops = 2 * costs.flops_per_forward(spec, n_tokens) * n_layers / arch.layers
    attn_flops = 2 * 4 * n_tokens * n_tokens * arch.dim * n_layers
    peak = None if a.tiny else matmul_peak_tflops("cuda")
    result: dict[str, Any] = {"model": spec.key, "size": f"{w}x{h}x{f}", "layers": n_layers, "tokens": n_tokens,
                              "tflop_per_step": round(flops / 1e12, 2), "attention_share_of_flops": round(attn_flops / flops, 3),
                              "matmul_peak_tflops": peak and round(peak, 1),
                              "device": torch.cuda.get_device_name() if not a.tiny else "cpu",
                              "date": time.strftime("%Y-%m-%d"), "variants": []}

    def step() -> list[torch.Tensor]:
        with torch.inference_mode():
            return [model(hidden_states=x, timestep=t, encoder_hidden_states=e, return_dict=False)[0] for e in text]

    compiled = grouped = gelu_on = False
    reference: list[torch.Tensor] | None = None
    for variant in a.variants.split(","):
        parts = variant.split(":")
        group = parts[0] in ("group", "grouptop")
        mode = parts[-2]
        backend, *extras = parts[-1].split("+")
        fused, gelu = "qkv" in extras, "gelu" in extras
        if group and not grouped and not a.tiny:  # weights to the CPU, streamed block by block from now on
            model.to("cpu")
            gc.collect()
            torch.cuda.empty_cache()
            model.enable_group_offload(onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
                                       offload_type="block_level", num_blocks_per_group=1, use_stream=True)
            if parts[0] == "grouptop":  # the product's placement: the layers around the blocks stay put
                result["top_level_kept_on_gpu"] = keep_top_level_on_gpu(model)
            grouped = True
        if mode == "eager" and compiled:
            raise SystemExit(f"{variant}: eager variants must come before the first compiled one")
        if gelu and compiled and not gelu_on:  # the compiled blocks must be traced again
            torch._dynamo.reset()
        set_variant(model, "sdpa" if a.tiny else backend, fused, gelu)
        gelu_on = gelu_on or gelu
        if mode == "compiled" and not compiled:
            model.compile_repeated_blocks(fullgraph=not grouped, **({"backend": "eager"} if a.tiny else {}))
            compiled = True
        row: dict[str, Any] = {"variant": variant}
        try:
            t0 = time.perf_counter()
            out = step()
            sync()
            row["first_call_s"] = round(time.perf_counter() - t0, 1)
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                step()
                sync()
                times.append(time.perf_counter() - t0)
            row["s_per_step"] = round(statistics.median(times), 4)
            if peak:
                row["mfu"] = round(flops / row["s_per_step"] / 1e12 / peak, 3)
            row["profile"] = profile_step(step)
            attn_s = row["profile"]["class_s"]["attention"]
            if attn_s:
                row["attention_tflops"] = round(attn_flops / attn_s / 1e12, 1)
            if reference is None:
                reference = [o.float() for o in out]
            else:
                row["rel_err_vs_first"] = round(max(float((o.float() - r).norm() / r.norm())
                                                    for o, r in zip(out, reference)), 5)
        except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        print(variant, {k: v for k, v in row.items() if k != "profile"}, row.get("profile", {}).get("class_s"), flush=True)
        result["variants"].append(row)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
