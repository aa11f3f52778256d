"""The planner's predictions beside the GPU measurements they were fitted to, row by row.

Reads ``tests/data/gpu_measured.json`` (every recorded size-menu, e2e and S2V-step row, with its
date and command), plans each row as its harness did (one H200 under a 24 GiB cap, the plan that
ran), and compares peak VRAM (±10 %), the step (±10 %) and each other phase's time (±20 %, or a second for phases near
zero). Prints the Markdown table for docs/BENCHMARKS.md; ``tests/memory/test_measured_fit.py``
asserts every comparison.

  python bench/fit_table.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wan_studio.catalog.specs import get_spec  # noqa: E402
from wan_studio.engine.compile_log import CompileLog, RunShape  # noqa: E402
from wan_studio.memory import costs  # noqa: E402
from wan_studio.memory.estimate import load_s, phase_peaks, pin_s  # noqa: E402
from wan_studio.memory.hardware import GIB, GpuInfo, Hardware  # noqa: E402
from wan_studio.memory.plan import Limits, Plan, Workload  # noqa: E402
from wan_studio.memory.planner import candidates  # noqa: E402

DATA = ROOT / "tests" / "data" / "gpu_measured.json"
VRAM_TOL, TIME_TOL, TIME_ABS_S = 0.10, 0.20, 1.0
# UMT5's token embedding (256,384 × 4096, bf16): held twice by rows with ``text_encoder_untied``
UNTIED_EMBEDDING_BYTES = 256_384 * 4096 * 2
STEP_TOL = 0.10  # the step is FLOPs at a fitted MFU: every recorded row is within 7 %


@dataclass(frozen=True)
class Check:
    """One predicted figure beside its measurement."""

    row: str
    figure: str
    predicted: float
    measured: float
    tolerance: float
    abs_s: float = 0.0
    known_miss: bool = False  # listed in the row's ``known_misses``: reported, not failed

    @property
    def error(self) -> float:
        """Relative error of the prediction."""
        return self.predicted / self.measured - 1 if self.measured else 0.0

    @property
    def ok(self) -> bool:
        """Within the relative tolerance, or within ``abs_s`` seconds."""
        return abs(self.error) <= self.tolerance or abs(self.predicted - self.measured) <= self.abs_s


def rows() -> list[dict[str, Any]]:
    """The recorded rows."""
    return json.loads(DATA.read_text(encoding="utf-8"))["rows"]


def hardware(row: dict[str, Any]) -> Hardware:
    """The machine as that row's planner saw it."""
    cap = 24 * GIB
    g = GpuInfo(0, "NVIDIA H200", cap, cap, (9, 0), bf16_tflops=row.get("tflops"))
    ram = json.loads(DATA.read_text(encoding="utf-8"))["host_ram_gib"] * GIB
    return Hardware((g,), ram, ram)


def plan_tflops(row: dict[str, Any]) -> float:
    """The bf16 rate the row's planner saw."""
    return hardware(row).gpus[0].tflops


def plan_of(row: dict[str, Any]) -> tuple[Plan, Workload]:
    """The plan that ran (by its label) for the row's workload; Triton as on the GPU machine."""
    spec = get_spec(row["model"])
    width, height = row.get("video_size") or (row["width"], row["height"])
    work = Workload(width, height, row["frames"], row["steps"], image=row["image"],
                    chunks=row.get("chunks", 1), video_frames=row.get("video_frames", 0))
    with_triton = costs.triton_installed
    costs.triton_installed = lambda: True  # type: ignore[assignment]
    try:
        plans = [p for p, _ in candidates(spec, work, hardware(row), Limits())]
    finally:
        costs.triton_installed = with_triton  # type: ignore[assignment]
    ran = [p for p in plans if p.label == row["plan"]]
    if not ran:
        raise LookupError(f"{row['case']}: no plan labelled '{row['plan']}'")
    return ran[0], work


def checks(row: dict[str, Any]) -> list[Check]:
    """Every figure of ``row`` that was measured, predicted beside it."""
    plan, work = plan_of(row)
    spec = get_spec(row["model"])
    ph = plan.phase_s
    name = row["case"]
    out: list[Check] = []
    phases = phase_peaks(spec, work, plan.placements)
    if row["harness"] == "s2v_step":  # the transformer's steps alone
        peak = phases["transformer"]["cuda:0"] / GIB
    elif row.get("text_encoder_untied"):  # the row's text encoder held its embedding twice
        phases["text_encoder"]["cuda:0"] += UNTIED_EMBEDDING_BYTES
        peak = max(ph.get("cuda:0", 0) for ph in phases.values()) / GIB
    else:
        peak = plan.peak_vram_gib
    out.append(Check(name, "peak VRAM GiB", peak, row["alloc_gib"], VRAM_TOL))
    out.append(Check(name, "s/step", plan.step_s, row["s_per_step"], STEP_TOL))
    if row.get("decode_s"):
        decode = ph["decode_s"]
        if row.get("chunks", 1) > 1:  # the sidecar times the last chunk's decode (its motion encode is before it)
            encode = costs.S2V_ENCODE_OVER_DECODE * costs.decode_s(
                spec, work.width, work.height, costs.S2V_MOTION_FRAMES, costs.GPU_PROFILE, plan_tflops(row))
            decode = costs.s2v_decodes_s(spec, work.width, work.height, work.frames, costs.GPU_PROFILE,
                                         plan_tflops(row))[1] - encode
        out.append(Check(name, "decode s", decode, row["decode_s"], TIME_TOL, TIME_ABS_S))
    if row.get("write_s"):
        out.append(Check(name, "mp4 s", ph["write_s"], row["write_s"], TIME_TOL, TIME_ABS_S))
    if row.get("text_s") is not None and (row["warm"] or row["harness"] == "e2e"):
        out.append(Check(name, "text s", ph["text_s"], row["text_s"], TIME_TOL, 0.25))
    if row.get("load_s") is not None and not row["warm"]:
        out.append(Check(name, "load s (cold)", ph["load_s"], row["load_s"], TIME_TOL, TIME_ABS_S))
    if row.get("place_s") is not None:  # weights already in memory: pinning and placing only
        # bench/e2e.py pins in its own process with torch's single-threaded default
        rate = costs.SINGLE_THREAD_PIN_BYTES_PER_S if row["harness"] == "e2e" else None
        out.append(Check(name, "pin s (in memory)", pin_s(spec, plan.placements, rate), row["place_s"], TIME_TOL))
    first = row.get("first_step_s")
    needs = compile_needs(row)
    if first is not None:
        # beyond one step: text encoding (worker rows) and what the job compiled
        text_in = 0.0 if row["harness"] == "e2e" else ph["text_s"]
        text_in += ph.get("condition_s", 0.0)  # image to video: its condition video's encode
        extra = first - row["s_per_step"]
        if "compile" in needs:
            swap = row.get("expert_swap_s") or 0.0
            out.append(Check(name, "text + compile s (first job)", text_in + plan.compile_s_for(needs), extra + swap,
                             TIME_TOL, TIME_ABS_S))
        elif "recompile" in needs:
            out.append(Check(name, "text + recompile s (new size)", text_in + plan.compile_s_for(needs), extra,
                             TIME_TOL, TIME_ABS_S))
        else:
            out.append(Check(name, "first step beyond a step s", text_in, extra, TIME_TOL, TIME_ABS_S))
    if row["harness"] == "worker":
        # rows recorded before the mp4 carried its settings tag keep the write they measured
        write = row["write_s"] if row.get("write_s") is not None else row.get("write_s_before_settings_tag", 0.0)
        measured = row["denoise_s"] + row["decode_s"] + write
        predicted = plan.warm_job_s + plan.compile_s_for(needs)
        out.append(Check(name, "job s (text to mp4)", predicted, measured, TIME_TOL))
    known = row.get("known_misses", {})
    return [replace(c, known_miss=c.figure in known) for c in out]


def compile_needs(row: dict[str, Any]) -> list[str]:
    """What the row's job compiled as the worker's compile log sees it: the log replayed over the
    jobs before it in the same worker process (``worker_run``, ``run_order``); a row of its own
    process compiles in its first job only."""
    spec = get_spec(row["model"])
    if "worker_run" not in row:
        return ["none"] if row["warm"] else ["compile"]
    log = CompileLog()
    before = sorted((r for r in rows() if r.get("worker_run") == row["worker_run"]
                     and r["run_order"] < row["run_order"]), key=lambda r: r["run_order"])
    for r in before:
        log.ran(spec.key, [run_shape(r)])
    # every worker row ran compiled blocks (bf16 TI2V-5B, model or block offload, Triton installed)
    return list(log.needs(spec.key, [run_shape(row)], compiled=True))


def run_shape(row: dict[str, Any]) -> RunShape:
    """The shape the row's transformer ran at (a timestep per token for TI2V from an image)."""
    per_token = costs.arch(get_spec(row["model"])).expand_timesteps and row["image"]
    return RunShape(row["width"], row["height"], row["frames"], per_token)


def every_check() -> list[Check]:
    """The checks of every recorded row."""
    return [c for r in rows() for c in checks(r)]


def markdown(rows_: list[dict[str, Any]]) -> str:
    """One table line per row: predicted → measured for each figure, the error in brackets."""
    lines = ["| case | date | plan | figure: predicted → measured (error) |", "|---|---|---|---|"]
    for r in rows_:
        parts = [f"{c.figure} {c.predicted:.2f} → {c.measured:.2f} ({c.error:+.0%})"
                 f"{'' if c.ok else (' **MISS, known**' if c.known_miss else ' **MISS**')}"
                 for c in checks(r)]
        lines.append(f"| {r['case']} | {r['date']} | {r['plan']} | {'; '.join(parts)} |")
    return "\n".join(lines)


def main() -> int:
    """Print the table; exit 1 when a figure is outside its tolerance."""
    print(markdown(rows()))
    misses = [c for c in every_check() if not c.ok and not c.known_miss]
    for c in misses:
        print(f"MISS {c.row}: {c.figure} predicted {c.predicted:.2f}, measured {c.measured:.2f}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
