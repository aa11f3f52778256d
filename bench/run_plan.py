"""Benchmark the planner's plan against plain diffusers recipes, in one process per model.

For one model: build it at full size with random weights on the GPU; run the uncapped resident
reference at each size (denoising only); move the weights to the CPU; emulate a smaller card with
``torch.cuda.set_per_process_memory_fraction`` (``--cap-gb``); run the plain diffusers baseline(s)
and then the planner's plan at each size. Prints a table and one ``RESULT {json}`` line per case
and writes ``<out>/<model>.json``. ``--tiny`` runs the same flow on the CPU with tiny models.

  python3 bench/run_plan.py --model t2v-a14b --sizes 832x480x81,1280x720x81 --steps 3 --cap-gb 24
  python3 bench/run_plan.py --tiny --model t2v-a14b --sizes 64x64x5 --steps 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for wan_studio
# Before torch starts CUDA: fewer fragments, so "fits under the cap" measures the plan, not luck.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402

import wan_studio  # noqa: E402,F401  (hides CUDA-only packages on CPU machines)
from measure import CaseResult, matmul_peak_tflops, run_case  # noqa: E402
from report import print_table  # noqa: E402
from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.memory import costs  # noqa: E402
from wan_studio.memory.apply import apply_plan, apply_storage, release_pipeline  # noqa: E402
from wan_studio.memory.plan import NoPlanFits, Plan, Workload  # noqa: E402
from wan_studio.memory.planner import choose  # noqa: E402

BASELINES = ("model_offload", "group_offload", "resident", "fp8_model_offload")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="ti2v-5b, t2v-a14b or i2v-a14b")
    ap.add_argument("--sizes", default="", help="WxHxF[,WxHxF...] (default: the model's official size)")
    ap.add_argument("--steps", type=int, default=3, help="denoising steps per capped run (≥ 2)")
    ap.add_argument("--steps-720p", type=int, default=2, help="steps when W×H ≥ 1280×704 (time budget)")
    ap.add_argument("--ref-steps", type=int, default=2, help="steps of the uncapped reference (0 = skip)")
    ap.add_argument("--cap-gb", type=float, default=24.0, help="emulated card size in GiB (0 = no cap)")
    ap.add_argument("--baselines", default="model_offload", help=f"comma list of {', '.join(BASELINES)}, or none")
    ap.add_argument("--no-decode", action="store_true", help="stop at latents in our runs too")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out"), help="folder for <model>.json")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with tiny models")
    a = ap.parse_args(argv)
    if a.steps < 2:
        ap.error("--steps must be at least 2 (the median needs a step after the first)")
    return a


def parse_sizes(text: str, spec: Any, tiny: bool) -> list[tuple[int, int, int]]:
    """``1280x720x81,832x480x81`` → [(1280, 720, 81), (832, 480, 81)]."""
    if not text:
        w, h = spec.default_size
        return [(64, 64, 5)] if tiny else [(w, h, spec.frames)]
    out = []
    for part in text.split(","):
        w, h, f = (int(x) for x in part.lower().split("x"))
        out.append((w, h, f))
    return out


def build(spec: Any, tiny: bool) -> Any:
    """The pipeline: tiny components on the CPU, or full-size random weights on the GPU."""
    if tiny:
        from wan_studio.memory.loaders import TinyLoader

        loader = TinyLoader()
        return loader.assemble(spec, {c.name: loader.load(spec, c.name, "bf16") for c in spec.components})
    from wan_studio.catalog.synthetic import build_pipeline

    return build_pipeline(spec, "cuda")


def apply_baseline(pipe: Any, name: str, device: str) -> None:
    """A plain diffusers recipe, as a user following the diffusers docs would write it."""
    if name == "resident":
        pipe.to(device)
    elif name in ("model_offload", "fp8_model_offload"):
        if name.startswith("fp8"):
            cast_transformers_fp8(pipe)
        pipe.enable_model_cpu_offload(device=device)
    elif name == "group_offload":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=device != "cpu")
    else:
        raise SystemExit(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if device != "cpu":
        pipe.vae.enable_tiling()


def cast_transformers_fp8(pipe: Any) -> None:
    """fp8 layerwise storage on the transformer(s), once (it cannot be undone)."""
    if getattr(pipe, "_bench_fp8", False):
        return
    for name in ("transformer", "transformer_2"):
        if getattr(pipe, name, None) is not None:
            apply_storage(getattr(pipe, name), "fp8")
    pipe._bench_fp8 = True


def predicted_phases(spec: Any, work: Any, plan: Any) -> dict[str, float]:
    """The planner's per-phase peaks on the primary GPU, in the bench's phase names (GiB)."""
    from wan_studio.memory.estimate import phase_peaks

    dev = plan.primary_device
    gib = {name: b.get(dev, 0) / 2**30 for name, b in phase_peaks(spec, work, plan.placements).items()}
    first = ["text_encoder", "transformer"] + (["vae"] if spec.requires_image else [])
    return {"text+first_step": round(max(gib.get(n, 0.0) for n in first), 2),
            "denoise": round(max(gib.get("transformer", 0.0), gib.get("transformer_2", 0.0)), 2),
            "decode": round(gib.get("vae", 0.0), 2)}


def hardware_for(cap_gb: float, peak_tflops: float, tiny: bool) -> Any:
    """The machine as the planner should see it: one GPU of ``cap_gb`` (or none with --tiny)."""
    import psutil

    from wan_studio.memory.hardware import GIB, GpuInfo, Hardware

    vm = psutil.virtual_memory()
    if tiny:  # plans are costed at full size; pretend the RAM is there so the flow runs
        return Hardware((), 1024 * GIB, 1024 * GIB)
    props = torch.cuda.get_device_properties(0)
    cap = int(cap_gb * GIB) if cap_gb else props.total_memory
    g = GpuInfo(0, props.name, cap, cap, (props.major, props.minor), bf16_tflops=peak_tflops)
    return Hardware((g,), vm.total, vm.available)


def placing_error(e: Exception) -> str:
    """One line for a case that failed before or while its pipeline ran."""
    kind = "OOM while placing" if isinstance(e, torch.OutOfMemoryError) else type(e).__name__
    return f"{kind}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def free() -> None:
    """Return cached blocks so the next case starts from an empty allocator."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Bench:
    """One model's run: the pipeline, the flags, and the results so far."""

    args: argparse.Namespace
    spec: Any
    pipe: Any
    device: str
    peak_tflops: float
    cap: float | None
    results: list[CaseResult] = field(default_factory=list)

    def steps_for(self, w: int, h: int) -> int:
        """Fewer steps at 720p and above, where one step takes ~25 s on an H200."""
        return self.args.steps_720p if w * h >= 1280 * 704 and not self.args.tiny else self.args.steps

    def one(self, case: str, size: tuple[int, int, int], steps: int, decode: bool, capped: float | None) -> CaseResult:
        """Run one case, record and print it; a failure is recorded, never raised."""
        w, h, f = size
        flops = costs.flops_per_forward(self.spec, costs.tokens(self.spec, w, h, f)) * 2  # CFG: two forwards
        r = CaseResult(case, self.spec.key, f"{w}x{h}x{f}", steps, capped)
        try:
            r = run_case(self.pipe, self.spec, r, w, h, f, decode, flops, self.peak_tflops)
        except Exception as e:  # report and go on with the next case, never hide
            r.error = f"{type(e).__name__}: {str(e)[:200]}"
        print("RESULT " + json.dumps(r.to_dict()), flush=True)
        return self.add(r)

    def add(self, r: CaseResult) -> CaseResult:
        """Keep ``r`` and save everything so far."""
        self.results.append(r)
        self.save()
        return r

    def save(self) -> None:
        """Write every result so far, so a run cut short still leaves its numbers."""
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{self.spec.key}.json").write_text(json.dumps([x.to_dict() for x in self.results], indent=1),
                                                   encoding="utf-8")

    def references(self, sizes: list[tuple[int, int, int]]) -> None:
        """Everything resident, no cap: the step time the capped runs are compared with."""
        for size in sizes:
            self.one("reference: resident, no cap", size, max(self.args.ref_steps, 2), False, None)
            free()

    def baselines(self, names: list[str], sizes: list[tuple[int, int, int]]) -> None:
        """Plain diffusers recipes under the cap."""
        for name in names:
            for w, h, f in sizes:
                try:
                    apply_baseline(self.pipe, name, self.device)
                    self.one(f"diffusers {name}", (w, h, f), self.steps_for(w, h), False, self.cap)
                except Exception as e:  # OOM while placing, or anything else: recorded, next case
                    self.add(CaseResult(f"diffusers {name}", self.spec.key, f"{w}x{h}x{f}", 0, self.cap,
                                        error=placing_error(e)))
                finally:
                    release_pipeline(self.pipe)
                    free()

    def ours(self, plans: list[tuple[Plan, tuple[int, int, int]]]) -> None:
        """The planner's plans under the cap, bf16 ones first (fp8 casting cannot be undone)."""
        for plan, (w, h, f) in sorted(plans, key=lambda pr: pr[0].storage == "fp8"):
            if plan.storage == "fp8":
                cast_transformers_fp8(self.pipe)
            try:
                apply_plan(self.pipe, plan)
                r = self.one(f"ours: {plan.label}", (w, h, f), self.steps_for(w, h), not self.args.no_decode,
                             self.cap)
            except Exception as e:  # OOM while placing, or anything else: recorded, next case
                r = self.add(CaseResult(f"ours: {plan.label}", self.spec.key, f"{w}x{h}x{f}", 0, self.cap,
                                        error=placing_error(e)))
            finally:
                release_pipeline(self.pipe)
                free()
            work = Workload(w, h, f, self.spec.steps)
            r.plan, r.predicted_peak_gib = plan.to_dict(), round(plan.peak_vram_gib, 2)
            r.predicted_step_s, r.predicted_phase_gib = round(plan.step_s, 3), predicted_phases(self.spec, work, plan)
            self.save()


def main(argv: list[str] | None = None) -> int:
    """Run every case for one model; print the table and write the JSON."""
    a = parse_args(argv)
    device = "cpu" if a.tiny else "cuda"
    spec = get_spec(a.model)
    sizes = parse_sizes(a.sizes, spec, a.tiny)
    peak = matmul_peak_tflops(device)
    print(f"# {spec.title}; matmul peak {peak:.1f} TFLOP/s on {device}; sizes {sizes}", flush=True)
    bench = Bench(a, spec, build(spec, a.tiny), device, peak, None if a.tiny or not a.cap_gb else a.cap_gb)
    if not a.tiny and a.ref_steps:
        bench.references(sizes)
    bench.pipe.to("cpu")
    free()
    if bench.cap:
        torch.cuda.set_per_process_memory_fraction(bench.cap * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    names = [] if a.baselines == "none" else [b for b in a.baselines.split(",") if b]
    bench.baselines([b for b in names if not b.startswith("fp8")], sizes)
    hw = hardware_for(a.cap_gb, peak, a.tiny)
    plans: list[tuple[Plan, tuple[int, int, int]]] = []
    for w, h, f in sizes:  # planned for a real job (the model's own step count), run for a few steps
        try:
            plans.append((choose(spec, Workload(w, h, f, spec.steps), hw), (w, h, f)))
        except NoPlanFits as e:
            bench.add(CaseResult("ours: no plan", spec.key, f"{w}x{h}x{f}", 0, bench.cap, error=str(e)[:300]))
    bench.ours(plans)
    bench.baselines([b for b in names if b.startswith("fp8")], sizes)
    print_table(bench.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
