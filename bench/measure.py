"""Timing and memory measurement of one pipeline call, shared by the benchmark scripts.

Steps are timed with a device synchronise inside ``callback_on_step_end``; the peak memory is
read (and reset) at the first and last step so text + first step, the remaining denoising steps
and the VAE decode each get their own peak. Text-encoder time comes from forward hooks on the
encoder, the expert swap from the step in which the second expert first runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

GIB = 2**30


@dataclass
class CaseResult:
    """One pipeline call: times in seconds, memory in GiB, ``None`` where not measured."""

    case: str
    model: str
    size: str
    steps: int
    capped_gb: float | None
    step_s: list[float] = field(default_factory=list)
    step_median_s: float | None = None
    text_s: float | None = None
    first_step_incl_text_s: float | None = None
    expert_swap_s: float | None = None
    decode_s: float | None = None
    total_s: float | None = None
    peak_alloc_gib: float | None = None
    peak_reserved_gib: float | None = None
    phase_peak_alloc_gib: dict[str, float] = field(default_factory=dict)
    tflops_per_step: float | None = None
    mfu: float | None = None
    predicted_peak_gib: float | None = None
    predicted_phase_gib: dict[str, float] = field(default_factory=dict)
    predicted_step_s: float | None = None
    plan: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return asdict(self)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 videos (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def sync() -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peaks() -> tuple[float | None, float | None]:
    """(max allocated, max reserved) GiB since the last reset; None on CPU."""
    if not torch.cuda.is_available():
        return None, None
    return torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB


def reset_peaks() -> None:
    """Start a new peak-memory window."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def job_arguments(parser: Any) -> None:
    """The options every whole-job benchmark takes: model, size, steps and the emulated card."""
    parser.add_argument("--model", default="ti2v-5b")
    parser.add_argument("--size", default="1280x704x121", help="WxHxF")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cap-gb", type=float, default=24.0)


def matmul_peak_tflops(device: str) -> float:
    """Dense bf16 matmul rate in TFLOP/s: 8192³ on a GPU (10 reps after 3 warm-ups), 1024³ fp32 on CPU."""
    n, dtype, reps = (8192, torch.bfloat16, 10) if device != "cpu" else (1024, torch.float32, 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def peak_then_cap(pipe: Any, cap_gb: float | None, tiny: bool) -> float | None:
    """Measure the GPU's bf16 matmul peak (TFLOP/s) while the freshly built ``pipe`` is still on it,
    then move ``pipe`` to the host and cap this process at ``cap_gb`` GiB (an emulated smaller
    card). Does nothing and returns None for a tiny CPU run."""
    if tiny:
        return None
    peak = matmul_peak_tflops("cuda")
    pipe.to("cpu")
    torch.cuda.empty_cache()
    if cap_gb:
        torch.cuda.set_per_process_memory_fraction(cap_gb * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    return peak


def force_expert_switch(pipe: Any, steps: int) -> None:
    """Put the MoE boundary between the middle two steps so a short run uses both experts."""
    if getattr(pipe, "transformer_2", None) is None or steps < 2:
        return
    pipe.scheduler.set_timesteps(steps, device="cpu")
    ts = pipe.scheduler.timesteps
    k = steps // 2
    boundary = float(ts[k - 1] + ts[k]) / 2 / pipe.scheduler.config.num_train_timesteps
    pipe.register_to_config(boundary_ratio=boundary)


def call_kwargs(spec: Any, width: int, height: int, frames: int, steps: int, decode: bool) -> dict[str, Any]:
    """Arguments of one pipeline call at the model's own guidance (CFG on)."""
    kwargs: dict[str, Any] = dict(prompt="a red fox trots through fresh snow at sunrise", negative_prompt="blurry",
                                  height=height, width=width, num_frames=frames, num_inference_steps=steps,
                                  guidance_scale=spec.guidance, generator=torch.Generator("cpu").manual_seed(0),
                                  output_type="np" if decode else "latent")
    if spec.guidance_2 is not None:
        kwargs["guidance_scale_2"] = spec.guidance_2
    if spec.requires_image:
        ramp = torch.linspace(0, 255, width).to(torch.uint8).expand(height, width)
        kwargs["image"] = Image.fromarray(torch.stack([ramp, ramp.flip(1), ramp // 2], -1).numpy())
    return kwargs


def run_case(pipe: Any, spec: Any, result: CaseResult, width: int, height: int, frames: int,
             decode: bool, flops_per_step: float, peak_tflops: float) -> CaseResult:
    """Run the pipeline once and fill ``result``; an out-of-memory error is recorded, not raised."""
    marks: list[float] = []
    text_spans: list[float] = []
    expert2_start: list[float] = []
    phase: dict[str, float] = {}

    def on_step(_p: Any, i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        sync()
        marks.append(time.perf_counter())
        if i == 0 or i == result.steps - 1:
            alloc, _ = peaks()
            if alloc is not None:
                phase["text+first_step" if i == 0 else "denoise"] = round(alloc, 2)
                phase.setdefault("_reserved", 0.0)
                phase["_reserved"] = max(phase["_reserved"], peaks()[1] or 0.0)
            reset_peaks()
        return kw

    def te_pre(*_: Any) -> None:
        sync()
        text_spans.append(-time.perf_counter())

    def te_post(*_: Any) -> None:
        sync()
        text_spans[-1] += time.perf_counter()

    hooks = [pipe.text_encoder.register_forward_pre_hook(te_pre), pipe.text_encoder.register_forward_hook(te_post)]
    if getattr(pipe, "transformer_2", None) is not None:
        hooks.append(pipe.transformer_2.register_forward_pre_hook(
            lambda *_: expert2_start.append(time.perf_counter()) if not expert2_start else None))
    force_expert_switch(pipe, result.steps)
    reset_peaks()
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            pipe(**call_kwargs(spec, width, height, frames, result.steps, decode), callback_on_step_end=on_step)
        sync()
        t_end = time.perf_counter()
    except torch.OutOfMemoryError as e:
        result.error = "OOM: " + str(e).split("\n")[0][:200]
        result.peak_alloc_gib = max([v for k, v in phase.items() if not k.startswith("_")] + [peaks()[0] or 0.0])
        return result
    finally:
        for h in hooks:
            h.remove()
    alloc, reserved = peaks()
    if alloc is not None:
        phase["decode" if decode else "tail"] = round(alloc, 2)
        result.peak_reserved_gib = round(max(phase.pop("_reserved", 0.0), reserved or 0.0), 2)
        result.peak_alloc_gib = round(max(phase.values()), 2)
    result.phase_peak_alloc_gib = phase
    result.step_s = [round(b - a, 3) for a, b in zip(marks, marks[1:])]
    result.first_step_incl_text_s = round(marks[0] - t0, 2) if marks else None
    result.text_s = round(sum(text_spans), 2)
    result.decode_s = round(t_end - marks[-1], 2) if decode and marks else None
    result.total_s = round(t_end - t0, 1)
    if result.step_s:
        swap_index = next((i for i, m in enumerate(marks) if expert2_start and m > expert2_start[0]), None)
        others = [s for i, s in enumerate(result.step_s, start=1) if i != swap_index] or result.step_s
        result.step_median_s = round(statistics.median(others), 3)
        if swap_index is not None and swap_index >= 1:
            result.expert_swap_s = round(result.step_s[swap_index - 1] - result.step_median_s, 2)
        result.tflops_per_step = round(flops_per_step / 1e12, 1)
        result.mfu = round(flops_per_step / result.step_median_s / (peak_tflops * 1e12), 3)
    return result
