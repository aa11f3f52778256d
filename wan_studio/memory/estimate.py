"""Predict peak VRAM per device, host RAM and time of a set of placements (see ``costs``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory import costs
from wan_studio.memory.hardware import Hardware
from wan_studio.memory.plan import TRANSFORMERS, Placement, Workload

GIB = 2**30
# UMT5-XXL: the 256,384 × 4096 shared embedding is outside the blocks and stays on the GPU under
# group offload; the rest is 24 blocks.
TEXT_EMBED_PARAMS = 256_384 * 4096
TEXT_BLOCKS = 24
SEQUENTIAL_IN_FLIGHT = int(0.5 * GIB)


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of a placement set. Bytes per device, seconds per step and per job."""

    peak_vram: dict[str, int]
    host_ram_bytes: int
    step_s: float
    job_s: float
    ideal_job_s: float

    @property
    def relative_speed(self) -> float:
        """Ideal (all resident, bf16) job time over this one's."""
        return self.ideal_job_s / self.job_s if self.job_s else 1.0


def params_of(spec: ModelSpec, component: str) -> int:
    """Parameter count of a component of ``spec`` (0 when the model has no such part)."""
    return next((c.params for c in spec.components if c.name == component), 0)


def stored(spec: ModelSpec, p: Placement) -> int:
    """Bytes of component ``p`` at its storage dtype."""
    nonblock = costs.arch(spec).nonblock_params if p.component in TRANSFORMERS else 0
    c = next((c for c in spec.components if c.name == p.component), None)
    if c is None:
        return 0
    return costs.component_bytes(c, p.storage, nonblock)


def in_flight(spec: ModelSpec, p: Placement) -> int:
    """Bytes of ``p`` on its GPU while it computes (whole model unless streamed)."""
    full = stored(spec, p)
    if p.offload == "balanced":
        return full // len(p.devices)
    if p.offload == "sequential":
        return min(full, SEQUENTIAL_IN_FLIGHT)
    if p.offload != "group_offload":
        return full
    if p.component in TRANSFORMERS:
        a = costs.arch(spec)
        nonblock = costs.stored_bytes(a.nonblock_params, "bf16")
        return nonblock + costs.GROUP_BLOCKS_IN_FLIGHT * costs.block_bytes(spec, params_of(spec, p.component), p.storage)
    if p.component == "text_encoder" and not spec.is_demo:
        embed = TEXT_EMBED_PARAMS * 2
        return embed + costs.GROUP_BLOCKS_IN_FLIGHT * (full - embed) // TEXT_BLOCKS
    return full


def always_on_gpu(p: Placement) -> bool:
    """Resident and split components hold their GPU memory for the whole job; so do 8-bit
    bitsandbytes weights, which diffusers' model offload leaves on the GPU."""
    return p.offload in ("resident", "balanced") or (p.storage == "int8" and p.offload == "model_offload")


def held_on_gpu(spec: ModelSpec, p: Placement) -> int:
    """Bytes of ``p`` its GPU holds for the whole job: all of it when resident, split or 8-bit; the
    layers around the blocks of a block-offloaded transformer (``apply.keep_top_level_on_gpu``)."""
    if always_on_gpu(p):
        return in_flight(spec, p)
    if p.offload == "group_offload" and p.component in TRANSFORMERS:
        return costs.stored_bytes(costs.arch(spec).nonblock_params, "bf16")
    return 0


def phase_peaks(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...]) -> dict[str, dict[str, int]]:
    """Predicted allocated bytes per GPU while each component computes (component → device → bytes).

    What a component holds for the whole job counts in every phase; the rest of an offloaded one
    only in its own, with its working memory (text encoding, one transformer forward, tiled decode).
    """
    base: dict[str, int] = defaultdict(int)
    for p in placements:
        if p.device != "cpu":
            for d in p.devices:
                base[d] += held_on_gpu(spec, p)
    n = costs.tokens(spec, work.width, work.height, work.frames)
    phases: dict[str, dict[str, int]] = {}
    for p in placements:
        if p.device == "cpu":
            continue
        work_bytes = {"text_encoder": costs.TEXT_WORK_BYTES, "vae": costs.decode_bytes(
            spec, work.width, work.height, work.frames)}.get(p.component, 0)
        if p.component in TRANSFORMERS:
            work_bytes = costs.activation_bytes(spec, n, work.image)
        phase = dict(base)
        for d in p.devices:
            phase[d] = phase.get(d, 0) + work_bytes + in_flight(spec, p) - held_on_gpu(spec, p)
        phases[p.component] = phase
    return phases


def peak_vram(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...]) -> dict[str, int]:
    """Predicted max allocated bytes per GPU over the text, denoise and decode phases."""
    phases = phase_peaks(spec, work, placements)
    devices = sorted({d for ph in phases.values() for d in ph})
    return {d: max(ph.get(d, 0) for ph in phases.values()) for d in devices}


def host_ram(spec: ModelSpec, placements: tuple[Placement, ...], work: Workload | None = None) -> int:
    """Host bytes: the larger of the steady state (everything not held on a GPU, plus the decoded
    video of ``work`` being assembled) and the load peak.

    An fp8 component is read in bf16 and cast afterwards, so while loading, the components cast
    before it (fp8 ones load first) sit beside its bf16 copy.
    """
    held = {p.component: (0 if always_on_gpu(p) else stored(spec, p)) for p in placements}
    load_peak, before = 0, 0
    for p in placements:
        if p.storage == "fp8":
            load_peak = max(load_peak, before + params_of(spec, p.component) * 2)
            before += held[p.component]
    video = costs.decode_host_bytes(work.width, work.height, work.frames) if work is not None else 0
    return costs.HOST_OVERHEAD_BYTES + max(sum(held.values()) + video, load_peak)


def timing(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], hw: Hardware) -> tuple[float, float, float]:
    """(seconds per step, seconds per job, ideal seconds per job) without decode (same for all)."""
    gpus = {g.device: g for g in hw.gpus}
    n = costs.tokens(spec, work.width, work.height, work.frames)
    forwards = work.passes_per_step
    flops = costs.flops_per_forward(spec, n) * forwards
    experts = [p for p in placements if p.component in TRANSFORMERS]
    step_s, ideal_step_s, per_job_s = 0.0, 0.0, 0.0
    for p in experts:
        g = gpus.get(p.devices[0])
        tflops = g.tflops if g else costs.CPU_TFLOPS
        link = (g.link_gbps if g else 1.0) * 1e9
        compiled = bool(g) and costs.compiles(spec, p.storage, p.offload)
        # ideal: the same model resident in bf16, compiled where this machine can
        ideal_mfu = costs.MFU_COMPILED if g and costs.compiles(spec, "bf16", "resident") else costs.MFU_EAGER
        ideal_step_s += flops / (tflops * 1e12 * ideal_mfu) / len(experts)
        compute = flops / (tflops * 1e12 * (costs.MFU_COMPILED if compiled else costs.MFU_EAGER))
        if g and not g.has_bf16:
            compute *= 3.0
        compute *= {"fp8": costs.FP8_COMPUTE_FACTOR, "int8": costs.INT8_COMPUTE_FACTOR,
                    "gguf": costs.GGUF_COMPUTE_FACTOR}.get(p.storage, 1.0)
        if p.offload == "group_offload":  # prefetch hides the transfer behind the compute it can
            transfer = forwards * stored(spec, p) / link
            compute += max(transfer - compute, 0.0) + costs.GROUP_TRANSFER_EXPOSED * transfer
        elif p.offload == "sequential":
            compute += forwards * stored(spec, p) / (link * costs.SEQUENTIAL_LINK_FACTOR)
        elif p.offload == "balanced":
            compute *= 1.02
        # The MoE experts split the steps between them (boundary near the middle of the schedule).
        step_s += compute / len(experts)
    for p in placements:
        g = gpus.get(p.devices[0])
        if p.component == "text_encoder" and p.device == "cpu" and not spec.is_demo:
            per_job_s += 2 * 2 * params_of(spec, p.component) * costs.arch(spec).text_len / (costs.CPU_TFLOPS * 1e12)
        if g is None:
            continue
        if p.offload == "model_offload" and not always_on_gpu(p):
            per_job_s += stored(spec, p) / (g.link_gbps * 1e9 * costs.MODEL_OFFLOAD_LINK_FACTOR)
        elif p.offload in ("group_offload", "sequential") and p.component not in TRANSFORMERS:
            per_job_s += 2 * stored(spec, p) / (g.link_gbps * 1e9)
    job_s = work.steps * step_s + per_job_s
    return step_s, job_s, work.steps * ideal_step_s


def estimate(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], hw: Hardware) -> Estimate:
    """Everything the planner compares plans by."""
    step_s, job_s, ideal = timing(spec, work, placements, hw)
    return Estimate(peak_vram(spec, work, placements), host_ram(spec, placements, work), step_s, job_s, ideal)
