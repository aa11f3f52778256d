"""A distilled (fast) job beside the same job at the official steps, through the worker's job path.

Full-size random weights on the GPU under an emulated ``--cap-gb`` card; one plan from the planner
(``apply_plan``) and the worker's speed options (``apply_speed``), then each job runs through
``engine.job.execute`` inside the worker's per-job knobs (``cluster.job_path.speed_knobs``: the VAE
decode precision a fast job asks for), exactly as a worker process runs a queued job:

  official  the model's own recipe: ``--official-steps`` (default: the official 40 / 50) with CFG
            (two transformer passes per step), fp32 decode;
  fast      4 steps at guidance 1 (one pass per step) on the distilled Euler grid, bf16 decode. On
            A14B the recipe's two distill LoRAs (random, rank 64, written here in the published
            file layout) are loaded into their experts, as a user's would be; TI2V-5B has no
            published distill LoRA, so its fast job is the same sampler and step count without one.

Random weights give speed, not quality. Per job: text + first step, median s/step, denoising,
decode, whole job (seconds), peak memory, the planner's predicted job time; then the speed-up.

  python3 bench/fast.py --model ti2v-5b --size 1280x704x121 --cap-gb 24
  python3 bench/fast.py --model t2v-a14b --size 832x480x81 --cap-gb 24 --official-steps 10
  bash bench/run_fast.sh ti2v | a14b                 # the same on the device (carry .whl, .ffmpeg)
  python bench/fast.py --tiny --model t2v-a14b       # CPU smoke test (tests/bench/test_fast.py)
Prints one ``RESULT {json}`` line.
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

import torch  # noqa: E402

import wan_studio  # noqa: E402,F401
from measure import peak_then_cap  # noqa: E402
from run_plan import build, cast_transformers_fp8, hardware_for  # noqa: E402
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.cluster.job_path import speed_knobs  # noqa: E402
from wan_studio.engine.accel import apply_speed, transformer_offload  # noqa: E402
from wan_studio.engine.distill import recipes_for  # noqa: E402
from wan_studio.engine.job import execute  # noqa: E402
from wan_studio.engine.request import GenerationRequest  # noqa: E402
from wan_studio.memory.apply import apply_plan  # noqa: E402
from wan_studio.memory.estimate import timing  # noqa: E402
from wan_studio.memory.overrides import PlanOverrides  # noqa: E402
from wan_studio.memory.plan import Workload  # noqa: E402
from wan_studio.memory.planner import plan_ladder  # noqa: E402

PROMPT = "a red fox trots through fresh snow at sunrise"
LORA_RANK = 64  # the published Lightning and Distill-Loras files are rank 64


def write_distill_loras(pipe: Any, recipe: Any, folder: Path) -> None:
    """Random rank-64 LoRAs for every attention and FFN layer of each expert, saved (peft layout) at
    the recipe's paths: the same adapter work per step as the published files."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    for f in recipe.loras:
        expert = pipe.transformer if f.expert == "high" else pipe.transformer_2
        expert.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]),
                           adapter_name="bench")
        state = get_peft_model_state_dict(expert, adapter_name="bench")
        expert.delete_adapters("bench")
        target = folder / f.file
        target.parent.mkdir(parents=True, exist_ok=True)
        WanPipeline.save_lora_weights(target.parent, transformer_lora_layers=state, weight_name=target.name)


def fast_request(spec: Any, base: dict[str, Any]) -> tuple[GenerationRequest, str]:
    """The fast job: the model's published recipe, or 4 CFG-free steps where none is published."""
    recipes = recipes_for(spec.key)
    if recipes:
        return GenerationRequest(**base, fast=recipes[0].key).resolved(), recipes[0].key
    over = {"steps": 4, "guidance": 1.0, "guidance_2": None, "overrides": {"decode": "bf16"}}
    return GenerationRequest(**{**base, **over}).resolved(), "4 steps, guidance 1 (no published distill weights)"


def run_job(pipe: Any, request: GenerationRequest, plan: Any, out: Path, loras: Path) -> dict[str, Any]:
    """One job the way a worker runs it; its timings (seconds) and peak memory (GiB)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sidecar: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        with speed_knobs(pipe, PlanOverrides.from_dict(request.overrides or {}), plan, sidecar):
            result = execute(pipe, request, out, loras_dir=loras, work_dir=out / ".work")
    except torch.OutOfMemoryError as e:
        return {"error": "OOM: " + str(e).splitlines()[0][:160]}
    t = result.timings
    row = {"steps": request.steps, "guidance": [request.guidance, request.guidance_2],
           "text_and_first_step_s": round(t.get("first_step_s", 0.0), 2), "s_per_step": round(t.get("s_per_step", 0.0), 3),
           "denoise_s": round(t.get("denoise_s", 0.0), 2), "decode_s": round(t.get("decode_s", 0.0), 2),
           "job_s": round(time.perf_counter() - t0, 2), "decode": (request.overrides or {}).get("decode", "fp32")}
    if torch.cuda.is_available():
        row["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ti2v-5b")
    p.add_argument("--size", default="1280x704x121", help="WxHxF")
    p.add_argument("--cap-gb", type=float, default=24.0)
    p.add_argument("--official-steps", type=int, default=None, help="steps of the official job (default: the model's)")
    p.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    a = p.parse_args(argv)

    spec = get_spec(a.model)
    w, h, f = (64, 64, 5) if a.tiny else (int(x) for x in a.size.split("x"))
    official_steps = 3 if a.tiny else (a.official_steps or spec.steps)
    pipe = build(spec, a.tiny)
    pipe.set_progress_bar_config(disable=True)
    work = Path(tempfile.mkdtemp(prefix="bench-fast-"))
    base = dict(prompt=PROMPT, model=spec.key, width=w, height=h, num_frames=f, seed=0)
    fast, fast_name = fast_request(spec, base)
    official = GenerationRequest(**base, steps=official_steps).resolved()
    if fast.fast:
        write_distill_loras(pipe, recipes_for(spec.key)[0], work / "loras")
    peak_tflops = peak_then_cap(pipe, a.cap_gb, a.tiny)
    hw = hardware_for(a.cap_gb, peak_tflops or 0.0, a.tiny)
    plan = None
    if not a.tiny:
        plan = plan_ladder(spec, Workload.from_request(official), hw)[0]
        if plan.storage == "fp8":  # the model manager stores weights at load time; the same here
            cast_transformers_fp8(pipe)
        apply_plan(pipe, plan)
    apply_speed(pipe, transformer_offload(plan) if plan else {"resident"}, plan.storage if plan else "bf16")
    t0 = time.perf_counter()
    execute(pipe, GenerationRequest(**{**official.to_dict(), "steps": 2}), work / "warmup", loras_dir=work / "loras",
            work_dir=work / "warmup" / ".work")  # the worker's first job: compiles, warms kernels
    result: dict[str, Any] = {"model": spec.key, "size": f"{w}x{h}x{f}", "cap_gb": a.cap_gb, "fast_recipe": fast_name,
                              "device": torch.cuda.get_device_name() if not a.tiny else "cpu",
                              "plan": plan.label if plan else "tiny on CPU", "warmup_job_s": round(time.perf_counter() - t0, 1),
                              "date": time.strftime("%Y-%m-%d"), "weights": "random (speed only, not quality)"}
    for name, request in (("official", official), ("fast", fast)):
        row = run_job(pipe, request, plan, work / name, work / "loras")
        if plan is not None:
            row["predicted_denoise_s"] = round(timing(spec, Workload.from_request(request), plan.placements, hw)[1], 1)
        row["passes_per_step"] = Workload.from_request(request).passes_per_step
        result[name] = row
        print(name, row, flush=True)
    if "job_s" in result["official"] and "job_s" in result["fast"]:
        result["speedup"] = round(result["official"]["job_s"] / result["fast"]["job_s"], 2)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
