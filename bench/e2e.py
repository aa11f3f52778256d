"""One whole job, end to end, the way Wan Studio runs it against plain diffusers, in the same run.

Full-size random weights on the GPU, a card of ``--cap-gb`` emulated with
``torch.cuda.set_per_process_memory_fraction``. Both runs get the same request (prompt, negative
prompt, seed, steps, guidance, shift) and return frames:

  baseline  plain diffusers as its docs say for a small card: ``enable_model_cpu_offload()``,
            ``vae.enable_tiling()`` (an untiled fp32 decode of 1280×704×121 peaks at 24.9 GiB), the
            default attention, the pipeline called directly.
  ours      the worker's path: the planner's plan (``apply_plan``), the worker's speed options
            (``apply_speed``: attention kernel, regional compile where it pays) and the product's
            ``render`` (scalar timestep for text jobs, the planned decode tile). A 2-step warm-up job
            first: the compile a worker pays once per loaded model is reported, not timed in the job.

Per run: text encoding, median s/step, denoising, decode, whole job (seconds), fixed costs (text +
decode + expert swap) as a share of the job, MFU of the median step against the bf16 matmul peak
measured in the same process, peak memory; then the speed-up and the frames' difference.

  python3 bench/e2e.py --model ti2v-5b --size 1280x704x121 --steps 50 --cap-gb 24
  python3 bench/e2e.py --model t2v-a14b --size 832x480x81 --steps 6 --skip-baseline \
      --pin storage=bf16,offload=group_offload      # a plan the planner would not pick by itself
  python bench/e2e.py --tiny                          # CPU smoke test (tests/bench/test_e2e.py)
Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import wan_studio  # noqa: E402,F401
from measure import job_arguments, peak_then_cap, psnr, sync  # noqa: E402
from run_plan import build, cast_transformers_fp8, hardware_for  # noqa: E402
from wan_studio.engine.noise import seeded_generator  # noqa: E402
from wan_studio.engine.sampler import official_scheduler  # noqa: E402
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.engine.accel import apply_speed, decode_precision, transformer_offload  # noqa: E402
from wan_studio.engine.generate import _pipeline_kwargs, render  # noqa: E402
from wan_studio.engine.request import GenerationRequest  # noqa: E402
from wan_studio.engine.video_io import frames_to_uint8  # noqa: E402
from wan_studio.memory import costs  # noqa: E402
from wan_studio.memory.apply import apply_plan, release_pipeline  # noqa: E402
from wan_studio.memory.plan import Workload  # noqa: E402
from wan_studio.memory.overrides import PlanOverrides  # noqa: E402
from wan_studio.memory.planner import plan_ladder  # noqa: E402


class Clock:
    """Text-encoder spans and step ends of one pipeline call (hooks removed on exit)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.text: list[float] = []
        self.steps: list[float] = []
        self.expert2: list[float] = []
        self.hooks: list[Any] = []

    def __enter__(self) -> Clock:
        def pre(*_: Any) -> None:
            sync()
            self.text.append(-time.perf_counter())

        def post(*_: Any) -> None:
            sync()
            self.text[-1] += time.perf_counter()

        te = self.pipe.text_encoder
        self.hooks = [te.register_forward_pre_hook(pre), te.register_forward_hook(post)]
        if getattr(self.pipe, "transformer_2", None) is not None:
            self.hooks.append(self.pipe.transformer_2.register_forward_pre_hook(
                lambda *_: self.expert2.append(time.perf_counter()) if not self.expert2 else None))
        return self

    def __exit__(self, *_: Any) -> None:
        for h in self.hooks:
            h.remove()

    def on_step(self, _p: Any, _i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        sync()
        self.steps.append(time.perf_counter())
        return kw

    def summary(self, t0: float, t_end: float, flops_per_step: float, peak_tflops: float | None) -> dict[str, Any]:
        gaps = [b - a for a, b in zip(self.steps, self.steps[1:])]
        swap_i = next((i for i, m in enumerate(self.steps[1:]) if self.expert2 and m > self.expert2[0]), None)
        steady = [g for i, g in enumerate(gaps) if i != swap_i] or gaps
        step = statistics.median(steady) if steady else None
        text = sum(self.text)
        decode = t_end - self.steps[-1] if self.steps else 0.0
        swap = (gaps[swap_i] - step) if swap_i is not None and step else 0.0
        total = t_end - t0
        out = {"text_s": round(text, 2), "s_per_step": step and round(step, 3),
               "denoise_s": round(self.steps[-1] - t0 - text, 2) if self.steps else None,
               "first_step_s": round(self.steps[0] - t0 - text, 2) if self.steps else None,
               "expert_swap_s": round(swap, 2), "decode_s": round(decode, 2), "job_s": round(total, 2),
               "fixed_share": round((text + decode + swap) / total, 3)}
        if step and peak_tflops:
            out["mfu"] = round(flops_per_step / step / 1e12 / peak_tflops, 3)
        if torch.cuda.is_available():
            out["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(p)
    p.add_argument("--decode", default="fp32", choices=["fp32", "bf16"], help="our VAE decode precision")
    p.add_argument("--skip-baseline", action="store_true", help="ours only (the baseline OOMs for A14B)")
    p.add_argument("--no-warmup", action="store_true", help="no warm-up job (nothing to compile in this plan)")
    p.add_argument("--pin", default="", help="plan overrides as the Advanced tab sets them, e.g. "
                   "storage=bf16,offload=group_offload (default: the planner's own choice)")
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    a = p.parse_args(argv)

    spec = get_spec(a.model)
    w, h, f = (64, 64, 5) if a.tiny else (int(x) for x in a.size.split("x"))
    steps = min(a.steps, 3) if a.tiny else a.steps
    device = "cpu" if a.tiny else "cuda"
    pipe = build(spec, a.tiny)
    pipe.set_progress_bar_config(disable=True)
    peak_tflops = peak_then_cap(pipe, a.cap_gb, a.tiny)
    request = GenerationRequest(prompt="a red fox trots through fresh snow at sunrise", model=spec.key, width=w,
                                height=h, num_frames=f, steps=steps, seed=0).resolved()
    flops = 2 * costs.flops_per_forward(spec, costs.tokens(spec, w, h, f))
    result: dict[str, Any] = {"model": spec.key, "size": f"{w}x{h}x{f}", "steps": steps, "cap_gb": a.cap_gb,
                              "device": torch.cuda.get_device_name() if not a.tiny else "cpu",
                              "matmul_peak_tflops": peak_tflops and round(peak_tflops, 1),
                              "tflop_per_step": round(flops / 1e12, 1), "date": time.strftime("%Y-%m-%d")}

    base_frames = None
    if not a.skip_baseline:
        if not a.tiny:
            pipe.enable_model_cpu_offload(device="cuda")
            torch.cuda.reset_peak_memory_stats()
        pipe.vae.enable_tiling()
        kwargs = _pipeline_kwargs(spec, request)
        # The same sampler and noise as the product's job (the official grid, noise drawn where the
        # official code draws it): the baseline differs only in how the model is placed.
        pipe.scheduler = official_scheduler(pipe.scheduler, request.shift)
        try:
            with torch.inference_mode():  # first-call set-up (cuBLAS, cuDNN) out of the timed job, as for ours
                pipe(**{**kwargs, "num_inference_steps": 1, "output_type": "latent"})
            kwargs["generator"], _ = seeded_generator(request.seed, pipe._execution_device)
            with Clock(pipe) as clock:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = pipe(**kwargs, callback_on_step_end=clock.on_step)
                sync()
                base_frames = frames_to_uint8(out.frames[0])
                result["baseline"] = clock.summary(t0, time.perf_counter(), flops, peak_tflops)
        except torch.OutOfMemoryError as e:
            result["baseline"] = {"error": "OOM: " + str(e).splitlines()[0][:160]}
        print("baseline", result["baseline"], flush=True)
        release_pipeline(pipe)
        if not a.tiny:
            pipe.to("cpu")
            torch.cuda.empty_cache()

    plan = None
    t_place = time.perf_counter()
    if not a.tiny:
        pins = PlanOverrides.from_dict(dict(kv.split("=", 1) for kv in a.pin.split(",") if kv))
        plan = plan_ladder(spec, Workload(w, h, f, steps, image=False),
                           hardware_for(a.cap_gb, peak_tflops or 0.0, False), overrides=pins)[0]
        if plan.storage == "fp8":  # the model manager stores weights at load time; the same here
            cast_transformers_fp8(pipe)
        apply_plan(pipe, plan)
    speed = apply_speed(pipe, transformer_offload(plan) if plan else {"resident"}, plan.storage if plan else "bf16")
    result["place_s"] = round(time.perf_counter() - t_place, 1)  # fp8 cast, pinning, placing, compile set-up
    if not a.no_warmup:
        t0 = time.perf_counter()
        render(pipe, GenerationRequest(**{**request.to_dict(), "steps": 2}))  # the worker's first job: compiles
        result["ours_warmup_job_s"] = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with Clock(pipe) as clock, decode_precision(pipe, a.decode):
        t0 = time.perf_counter()
        # render's own step callback reports progress; the clock reads the same step ends through it
        done = render(pipe, request, on_progress=lambda pr: clock.on_step(None, 0, None, {})
                      if pr.stage == "denoising" else None)
        t_end = time.perf_counter()
    result["ours"] = {**clock.summary(t0, t_end, flops, peak_tflops), "plan": plan.label if plan else "tiny on CPU",
                      "vae_tile": list(plan.vae_tile) if plan else None, "decode": a.decode,
                      "predicted_peak_gib": plan and round(plan.peak_vram_gib, 2),
                      "attention": speed.get("attention"), "compile": speed.get("compile")}
    print("ours", result["ours"], flush=True)
    if base_frames is not None:
        result["speedup"] = round(result["baseline"]["job_s"] / result["ours"]["job_s"], 3)
        diff = np.abs(base_frames.astype(np.int16) - done.frames.astype(np.int16))
        result["frames_vs_baseline"] = {"psnr_db": round(psnr(base_frames, done.frames), 1), "max_abs": int(diff.max()),
                                        "mean_abs": round(float(diff.mean()), 3)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
