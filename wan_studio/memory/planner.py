"""(model, workload, hardware, limits) → the fastest ``Plan`` that fits, and lighter fallbacks.

Candidates are the placements diffusers can apply: everything resident; model offload (one whole
component on the GPU at a time); block-group offload with CUDA-stream prefetch; sequential
offload; and on two GPUs the text encoder on the second card, one MoE expert per card, or a
transformer split across both with accelerate. Each is costed by ``estimate``; the planner keeps
those that fit with headroom and ranks them by predicted speed, with a small preference for bf16
(quality) and for fewer GPUs (leaves the other free).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory import costs
from wan_studio.memory.estimate import Estimate, estimate, phase_peaks
from wan_studio.memory.hardware import GpuInfo, Hardware
from wan_studio.memory.overrides import OverrideError, PlanOverrides
from wan_studio.memory.plan import (
    GIB, TRANSFORMERS, Limits, NoPlanFits, Offload, Placement, Plan, Storage, Workload,
)

# Score multipliers: fp8 must be clearly faster than the best bf16 plan to be chosen.
# GGUF ranks last: it is chosen when the bf16 / fp8 weights do not fit (most often the host RAM).
QUALITY_WEIGHT: dict[str, float] = {"bf16": 1.0, "fp32": 1.0, "fp8": 0.95, "int8": 0.93, "gguf": 0.9}
# Placements GGUF weights are planned with: diffusers' GGUF layers are moved whole; streaming them
# block by block (group offload) or splitting them has not been verified on a GPU yet.
GGUF_OFFLOADS = frozenset({"resident", "model_offload", "cpu"})
SECOND_GPU_WEIGHT = 0.99
# A lighter fallback must cut the predicted peak by at least this fraction of the failed plan's.
LADDER_STEP = 0.85

Layout = tuple[str, dict[str, tuple[str, Offload]]]


def _base_storage(spec: ModelSpec, component: str) -> Storage:
    c = next(c for c in spec.components if c.name == component)
    return "fp32" if c.dtype == "fp32" else "bf16"


def _layouts(spec: ModelSpec, gpus: tuple[GpuInfo, ...]) -> Iterator[Layout]:
    """(label, component -> (device, offload)) for every layout worth costing."""
    names = [c.name for c in spec.components]
    experts = [n for n in names if n in TRANSFORMERS]
    others = [n for n in names if n not in TRANSFORMERS]
    if not gpus:
        yield "cpu", {n: ("cpu", "cpu") for n in names}
        return
    g0 = gpus[0].device
    for mode, label in (("resident", "all on GPU"), ("model_offload", "model offload"),
                        ("group_offload", "block offload with prefetch"), ("sequential", "sequential offload")):
        yield label, {n: (g0, mode) for n in names}
    if spec.is_demo:
        return
    # The transformer streamed block by block while the text encoder and the VAE, which fit the card
    # alone, take turns on it whole from pinned memory: streamed, those two cost 19-22 s (text) and
    # ~3x the decode time per A14B 720p job (docs/BENCHMARKS.md).
    layout = {n: (g0, "group_offload") for n in experts} | {n: (g0, "model_offload") for n in others}
    yield "block offload with prefetch, text encoder and VAE model-offloaded", layout
    for mode, label in (("resident", "on GPU 0"), ("group_offload", "block offload on GPU 0")):
        layout = {n: (g0, mode) for n in names}
        layout["text_encoder"] = ("cpu", "cpu")
        yield f"text encoder on CPU, transformer {label}", layout
    if len(gpus) < 2:
        return
    g1 = gpus[1].device
    for mode, label in (("resident", "on GPU 0"), ("group_offload", "block offload on GPU 0")):
        layout = {n: (g0, mode) for n in names}
        layout["text_encoder"] = (g1, "resident")
        yield f"text encoder on GPU 1, transformer {label}", layout
    if len(experts) == 2:
        for te, te_label in (((g0, "group_offload"), "streamed on GPU 0"), ((g1, "resident"), "on GPU 1")):
            layout = {"transformer": (g0, "resident"), "transformer_2": (g1, "resident")}
            layout |= {n: (g0, "resident") for n in others}
            layout["text_encoder"] = te
            yield f"one expert per GPU, text encoder {te_label}", layout
    both = f"{g0},{g1}"
    layout = {n: (both, "balanced") for n in experts} | {n: (g0, "resident") for n in others}
    layout["text_encoder"] = (g0, "group_offload")
    yield "transformer split across both GPUs", layout


def _storages(spec: ModelSpec, limits: Limits, has_gpu: bool) -> list[Storage]:
    if spec.is_demo:
        return ["fp32"]
    experts = [c for c in spec.components if c.name in TRANSFORMERS]
    if any(c.gguf_only for c in experts):
        return ["gguf"]  # only GGUF files of the transformer(s) are on disk
    out: list[Storage] = ["bf16"]
    if limits.allow_fp8:
        out.append("fp8")
    if limits.allow_8bit and has_gpu:
        out.append("int8")
    if any(c.gguf_bytes for c in experts):
        out.append("gguf")
    return out


def _component_storage(spec: ModelSpec, component: str, storage: Storage) -> Storage:
    """What ``component`` is stored as when the transformers are ``storage`` (a transformer without
    a GGUF file stays bf16 in a GGUF plan)."""
    if component not in TRANSFORMERS:
        return _base_storage(spec, component)
    c = next(c for c in spec.components if c.name == component)
    return "bf16" if storage == "gguf" and not c.gguf_bytes else storage


def candidates(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits) -> list[tuple[Plan, Estimate]]:
    """Every costed plan, fitting or not, in no particular order."""
    gpus = tuple(sorted(hw.gpus, key=lambda g: -g.free_bytes))
    out: list[tuple[Plan, Estimate]] = []
    for label, layout in _layouts(spec, gpus):
        for storage in _storages(spec, limits, bool(gpus)):
            placements: list[Placement] = []
            for c in spec.components:
                device, offload = layout[c.name]
                placements.append(Placement(c.name, device, _component_storage(spec, c.name, storage), offload))
            if storage == "int8" and any(p.offload in ("group_offload", "sequential", "balanced")
                                         for p in placements if p.component in TRANSFORMERS):
                continue  # bitsandbytes weights cannot be streamed or split by these hooks
            if storage == "gguf" and any(p.offload not in GGUF_OFFLOADS for p in placements
                                         if p.storage == "gguf"):
                continue
            pl = tuple(placements)
            est = estimate(spec, work, pl, hw)
            name = label if storage in ("bf16", "fp32") else f"{label}, {_storage_words(spec, storage)} transformer"
            tile, peaks = _decode_tile(spec, work, pl, est, hw, limits)
            plan = Plan(spec.key, name, pl, vae_tiling=not spec.is_demo,
                        peak_vram=tuple(peaks.items()), host_ram_bytes=est.host_ram_bytes,
                        step_s=est.step_s, job_s=est.job_s, relative_speed=min(_speed_at_default_steps(spec, work, est), 1.0),
                        vae_tile=tile, phases=tuple((k, round(v, 4)) for k, v in est.phases.items()))
            out.append((plan, est))
    return out


def _storage_words(spec: ModelSpec, storage: Storage) -> str:
    """``fp8``, ``GGUF Q5_K``."""
    if storage != "gguf":
        return storage
    quant = next((c.gguf_quant for c in spec.components if c.gguf_quant), "")
    return f"GGUF {quant}".strip()


def _speed_at_default_steps(spec: ModelSpec, work: Workload, est: Estimate) -> float:
    """Ideal over predicted job time, both at the model's default step count.

    Plans are ranked by this, not by the job's own step count: the fixed costs (moving components
    on, text encoding) weigh more in a short job, and ranking by the job's own steps gave a 50-step
    job model offload and the 8-step job after it block offload, a reload and a recompile for
    nothing. The same model and size now get the same plan whatever the step count.
    """
    # A speech-to-video job runs its steps once per chunk: the fixed costs are what is left after
    # all of them (counting one chunk's put every plan at full speed, and the first that fitted won).
    steps = max(work.total_steps, 1)
    default_steps = spec.steps * max(work.chunks, 1)
    fixed_s = est.job_s - steps * est.step_s
    job_s = default_steps * est.step_s + fixed_s
    return default_steps * (est.ideal_job_s / steps) / job_s if job_s > 0 else 1.0


def _decode_tile(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], est: Estimate,
                 hw: Hardware, limits: Limits) -> tuple[tuple[int, int], dict[str, int]]:
    """The VAE decode tile for these placements and the plan's peaks with it: the bigger, faster
    tile where the VAE has one and its decode phase still fits the card, else the default."""
    peaks = dict(est.peak_vram)
    big = costs.BIG_DECODE_TILE.get(spec.vae)
    vae = next((p for p in placements if p.component == "vae"), None)
    if spec.is_demo or big is None or vae is None or vae.device == "cpu":
        return costs.DEFAULT_DECODE_TILE, peaks
    need = phase_peaks(spec, work, placements)["vae"].get(vae.device, 0) + costs.BIG_TILE_EXTRA_BYTES[spec.vae]
    free = {g.device: g.free_bytes for g in hw.gpus}
    if need > (free.get(vae.device, 0) - costs.CONTEXT_BYTES) * (1 - limits.headroom):
        return costs.DEFAULT_DECODE_TILE, peaks
    peaks[vae.device] = max(peaks.get(vae.device, 0), need)
    return big, peaks


def shortfall(plan: Plan, hw: Hardware, limits: Limits) -> str | None:
    """Why ``plan`` does not fit (None when it does)."""
    free = {g.device: g.free_bytes for g in hw.gpus}
    for dev, need in plan.peak_vram:
        usable = (free.get(dev, 0) - costs.CONTEXT_BYTES) * (1 - limits.headroom)
        if need > usable:
            return f"needs {need / GIB:.1f} GiB on {dev} where {usable / GIB:.1f} GiB are usable"
    ram = hw.host_total_bytes * limits.host_fraction
    if plan.host_ram_bytes > ram:
        return f"needs {plan.host_ram_bytes / GIB:.0f} GiB of RAM where {ram / GIB:.0f} GiB are usable"
    return None


def score(plan: Plan) -> float:
    """Higher is better: predicted speed, nudged towards bf16 and towards one GPU."""
    w = QUALITY_WEIGHT[plan.storage] * (SECOND_GPU_WEIGHT if len(plan.devices) > 1 else 1.0)
    return plan.relative_speed * w


def plan_ladder(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits | None = None,
                overrides: PlanOverrides | None = None) -> list[Plan]:
    """The chosen plan first, then ever lighter plans that fit, for out-of-memory recovery.

    ``overrides`` pins knobs: only plans honouring them are considered (``OverrideError`` when
    none fits). Raises ``NoPlanFits`` with the nearest miss when nothing fits.
    """
    limits = limits or Limits()
    if overrides is not None and overrides.pins_memory:
        return _pinned_ladder(spec, work, hw, limits, overrides)
    scored = candidates(spec, work, hw, limits)
    fitting = [p for p, _ in scored if shortfall(p, hw, limits) is None]
    if not fitting:
        raise NoPlanFits(_no_fit_message(spec, work, hw, limits, [p for p, _ in scored]))
    return _ladder_from(fitting, [p for p, _ in scored], hw, limits)


def _ladder_from(fitting: list[Plan], every: list[Plan], hw: Hardware, limits: Limits) -> list[Plan]:
    # equal scores (plans at full speed) go to the shorter predicted job
    fitting.sort(key=lambda p: (score(p), -p.warm_job_s), reverse=True)
    chosen = replace(fitting[0], why=_gguf_note(fitting[0], every) + _why(fitting[0], every, hw, limits))
    ladder = [chosen]
    while True:
        cap = ladder[-1].peak_vram_gib * LADDER_STEP
        lighter = [p for p in fitting if p.peak_vram_gib < cap]
        if not lighter:
            return ladder
        nxt = lighter[0]
        ladder.append(replace(nxt, why=f"lighter fallback after running out of memory: {nxt.summary()}"))


def _pinned_ladder(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits,
                   overrides: PlanOverrides) -> list[Plan]:
    """The ladder among plans honouring ``overrides``; an explicit storage pin unlocks 8-bit, but
    never fp8 when the app was started with ``--no-fp8``."""
    if overrides.storage == "fp8" and not limits.allow_fp8:
        raise OverrideError("fp8 storage is turned off on this server (--no-fp8); pick bf16 or automatic")
    if overrides.storage == "int8":
        limits = replace(limits, allow_8bit=True)
    every = [p for p, _ in candidates(spec, work, hw, limits)]
    matching = [p for p in every if overrides.matches(p)]
    if not matching:
        raise OverrideError(f"{spec.title} has no way to run with {overrides.describe()} on {hw.describe()}; "
                            "set that override back to automatic")
    fitting = [p for p in matching if shortfall(p, hw, limits) is None]
    if not fitting:
        nearest = min(matching, key=lambda p: _overshoot(p, hw, limits))
        try:
            auto = f" The automatic choice would be '{plan_ladder(spec, work, hw, limits)[0].label}'."
        except NoPlanFits:
            auto = ""
        raise OverrideError(f"{spec.title} at {work.describe()} with {overrides.describe()} does not fit: "
                            f"'{nearest.label}' {shortfall(nearest, hw, limits)}.{auto}")
    ladder = _ladder_from(fitting, matching, hw, limits)
    note = f" (pinned: {overrides.describe()})"
    return [replace(p, why=p.why + note) for p in ladder]


def _gguf_note(plan: Plan, every: list[Plan]) -> str:
    """When GGUF is chosen, what it saves against the same placement with bf16 / fp8 weights,
    e.g. ``GGUF Q5_K: 19 GiB of RAM instead of 57 GiB (bf16). ``; where the transformers stay on
    the GPU that placement needs no more RAM, and the saving is GPU memory."""
    if plan.storage != "gguf":
        return ""
    layout = [(p.component, p.device, p.offload) for p in plan.placements]
    others = [p for p in every if p.storage in ("bf16", "fp8")
              and [(q.component, q.device, q.offload) for q in p.placements] == layout]
    if not others:
        return ""
    lightest = min(others, key=lambda p: p.host_ram_bytes)
    quant = plan.label.rsplit(", ", 1)[-1].removesuffix(" transformer")
    if round(lightest.host_ram_bytes / GIB) > round(plan.host_ram_bytes / GIB):
        return (f"{quant}: {plan.host_ram_bytes / GIB:.0f} GiB of RAM instead of {lightest.host_ram_bytes / GIB:.0f} "
                f"GiB ({lightest.storage}). ")
    lightest = min(others, key=lambda p: p.peak_vram_gib)
    return (f"{quant}: {plan.peak_vram_gib:.0f} GiB of GPU memory instead of {lightest.peak_vram_gib:.0f} GiB "
            f"({lightest.storage}). ")


def choose(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits | None = None) -> Plan:
    """The fastest plan that fits with headroom (see ``plan_ladder``)."""
    return plan_ladder(spec, work, hw, limits)[0]


def _why(plan: Plan, every: list[Plan], hw: Hardware, limits: Limits) -> str:
    """One sentence: what was chosen and what stopped the faster options."""
    if not hw.has_gpu:
        return (f"No GPU found, so everything runs on the CPU (about {_duration(plan.warm_job_s)} "
                f"predicted for the job); a CUDA GPU is far faster.")
    faster = [p for p in every if score(p) > score(plan) and shortfall(p, hw, limits)]
    faster.sort(key=score, reverse=True)
    tail = f"predicted peak {plan.peak_vram_gib:.1f} GiB, {plan.relative_speed:.0%} of full speed, {plan.quality}"
    if not faster:
        return f"{plan.label}: the fastest way to run it here; {tail}."
    f = faster[0]
    return f"{plan.label}: the faster '{f.label}' {shortfall(f, hw, limits)}; {tail}."


def _duration(seconds: float) -> str:
    """``12 s``, ``7 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _overshoot(plan: Plan, hw: Hardware, limits: Limits) -> float:
    """How many times over its tightest budget ``plan`` is (≤ 1 fits)."""
    free = {g.device: g.free_bytes for g in hw.gpus}
    ratios = [plan.host_ram_bytes / (hw.host_total_bytes * limits.host_fraction)]
    for dev, need in plan.peak_vram:
        usable = max((free.get(dev, 0) - costs.CONTEXT_BYTES) * (1 - limits.headroom), 1)
        ratios.append(need / usable)
    return max(ratios)


def _no_fit_message(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits, every: list[Plan]) -> str:
    nearest = min(every, key=lambda p: _overshoot(p, hw, limits))
    hints = []
    if not limits.allow_fp8:
        hints.append("allow fp8 storage")
    if not limits.allow_8bit:
        hints.append("allow 8-bit weights")
    would = _sizes_that_fit(spec, work, hw, limits)
    if would:
        hints.append(f"make it {' or '.join(w.describe() for w in would)}, which fit{'s' if len(would) == 1 else ''}")
    else:
        hints.append("lower the resolution or the number of frames")
    hints.append("free GPU memory or add RAM")
    return (f"{spec.title} cannot run at {work.describe()} on {hw.describe()}: the closest plan "
            f"('{nearest.label}') {shortfall(nearest, hw, limits)}. Try to {', or '.join(hints)}.")


def _fits(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits) -> bool:
    return any(shortfall(p, hw, limits) is None for p, _ in candidates(spec, work, hw, limits))


def _sizes_that_fit(spec: ModelSpec, work: Workload, hw: Hardware, limits: Limits) -> list[Workload]:
    """The longest clip at this size that fits (frames cut in 24-frame steps, staying 4k+1), and
    the largest smaller size (×0.75 and ×0.5 of each side, multiples of 32) at these frames."""
    out: list[Workload] = []
    for frames in range(work.frames - 24, 0, -24):
        if _fits(spec, replace(work, frames=frames), hw, limits):
            out.append(replace(work, frames=frames))
            break
    for scale in (0.75, 0.5):
        w, h = (max(32, int(side * scale) // 32 * 32) for side in (work.width, work.height))
        if _fits(spec, replace(work, width=w, height=h), hw, limits):
            out.append(replace(work, width=w, height=h))
            break
    return out
