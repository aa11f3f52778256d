"""Predict peak VRAM per device, host RAM and time of a set of placements (see ``costs``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory import costs
from wan_studio.memory.hardware import Hardware
from wan_studio.memory.plan import TRANSFORMERS, Placement, Workload, cold_extra_of

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
    # Seconds per phase of one job: load_s (a fresh worker reads and pins the model), compile_s
    # (the first job of a loaded model), recompile_s (a compiled worker's job at a shape it has not
    # traced yet), text_s, condition_s (image to video: the VAE encode of its condition video, in the
    # first step), steps_s, decode_s, write_s (the mp4); compile_hidden_s: the part of
    # compile_s a cold worker runs beside the load (``warms_while_loading``), warmup_wait_s: what
    # its first job waits after the load for that warm-up.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def warm_job_s(self) -> float:
        """A job on a worker that holds the model compiled: text, condition encode, steps, decode, mp4."""
        return sum(self.phases.get(k, 0.0) for k in costs.JOB_PHASES)

    @property
    def cold_job_s(self) -> float:
        """The first job of a fresh worker: loading and compiling too (partly at once)."""
        return self.warm_job_s + cold_extra_of(self.phases)

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
        # streamed by its blocks, the token embedding left on the host (``apply.place_component``)
        return costs.TEXT_BLOCKS_IN_FLIGHT * streamed_text_bytes(spec, p) // TEXT_BLOCKS
    return full


def streamed_text_bytes(spec: ModelSpec, p: Placement) -> int:
    """Bytes of a block-offloaded UMT5 that move to the GPU for each prompt: all but its token
    embedding, which stays on the host (``apply.embed_on_host``)."""
    return max(stored(spec, p) - TEXT_EMBED_PARAMS * 2, 0)


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
        a = costs.arch(spec)
        return costs.stored_bytes(a.nonblock_params - a.streamed_nonblock_params, "bf16")
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
    n = costs.attended_tokens(spec, work.width, work.height, work.frames)
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
    # the whole clip's frames: speech to video keeps every chunk's until the last is decoded
    # every chunk's frames wait on the host until the last one is decoded
    video = costs.decode_host_bytes(work.width, work.height, work.frames * work.chunks) if work is not None else 0
    return costs.HOST_OVERHEAD_BYTES + max(sum(held.values()) + video, load_peak)


def _gpu_of(hw: Hardware, p: Placement):  # noqa: ANN202 - GpuInfo | None
    return {g.device: g for g in hw.gpus}.get(p.devices[0])


def _onload_s(spec: ModelSpec, p: Placement, g) -> float:  # noqa: ANN001 - g: GpuInfo | None
    """Seconds a job spends moving component ``p`` onto its GPU (none when it stays there)."""
    if g is None:
        return 0.0
    if p.offload == "model_offload" and not always_on_gpu(p):
        return stored(spec, p) / (g.link_gbps * 1e9 * costs.MODEL_OFFLOAD_LINK_FACTOR)
    if p.offload == "group_offload" and p.component == "text_encoder" and not spec.is_demo:
        return 2 * streamed_text_bytes(spec, p) / (g.link_gbps * 1e9)  # the prompt and the negative one
    if p.offload in ("group_offload", "sequential") and p.component not in TRANSFORMERS:
        return 2 * stored(spec, p) / (g.link_gbps * 1e9)
    return 0.0


def _forward_s(spec: ModelSpec, p: Placement, flops: float, g, forwards: float) -> float:  # noqa: ANN001
    """Seconds of ``forwards`` forwards of transformer ``p`` (``flops`` for all of them) on its
    device, before transfers: FLOPs at the device's rate and the eager ops' dispatch (on a GPU the
    launches run ahead of the device and hide unless the kernels are tiny; compiled, they vanish)."""
    if g is None:
        prof = costs.CPU_PROFILE
        compute = flops / (costs.CPU_TFLOPS * 1e12 * costs.cpu_efficiency(spec))
        return compute + forwards * costs.ops_per_forward(spec) * prof.op_overhead_s
    compiled = costs.compiles(spec, p.storage, p.offload)
    compute = flops / (g.tflops * 1e12 * (costs.MFU_COMPILED if compiled else costs.arch(spec).mfu_eager))
    if not g.has_bf16:
        compute *= 3.0
    compute *= {"fp8": costs.FP8_COMPUTE_FACTOR, "int8": costs.INT8_COMPUTE_FACTOR,
                "gguf": costs.GGUF_COMPUTE_FACTOR}.get(p.storage, 1.0)
    launches = 0.0 if compiled else forwards * costs.ops_per_forward(spec) * costs.GPU_PROFILE.op_overhead_s
    return max(compute, launches)


def timing(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], hw: Hardware) -> tuple[float, float, float]:
    """(seconds per step, seconds per job, ideal seconds per job) of the denoising: the steps plus
    the transfers a job makes (components moved on, text encoding). Decode and the mp4 write cost
    the same under every plan and are in ``phase_times``."""
    forwards = work.passes_per_step
    flops = costs.forward_flops(spec, work.width, work.height, work.frames) * forwards
    experts = [p for p in placements if p.component in TRANSFORMERS]
    step_s, ideal_step_s, per_job_s = 0.0, 0.0, 0.0
    for p in experts:
        g = _gpu_of(hw, p)
        link = (g.link_gbps if g else 1.0) * 1e9
        # ideal: the same model resident in bf16, compiled where this machine can
        if g is None:
            ideal_step_s += _forward_s(spec, p, flops, None, forwards) / len(experts)
        else:
            ideal_mfu = costs.MFU_COMPILED if costs.compiles(spec, "bf16", "resident") else costs.arch(spec).mfu_eager
            ideal_step_s += flops / (g.tflops * 1e12 * ideal_mfu) / len(experts)
        compute = _forward_s(spec, p, flops, g, forwards)
        if g is not None and p.offload == "group_offload":  # prefetch hides the transfer behind the compute it can
            transfer = forwards * stored(spec, p) / link
            compute += max(transfer - compute, 0.0) + costs.GROUP_TRANSFER_EXPOSED * transfer
        elif g is not None and p.offload == "sequential":
            compute += forwards * stored(spec, p) / (link * costs.SEQUENTIAL_LINK_FACTOR)
        elif p.offload == "balanced":
            compute *= 1.02
        # The MoE experts split the steps between them (boundary near the middle of the schedule).
        step_s += compute / len(experts)
    for p in placements:
        if p.component == "text_encoder" and p.device == "cpu" and not spec.is_demo:
            per_job_s += _text_compute_s(spec, p, None, work)
        per_job_s += _onload_s(spec, p, _gpu_of(hw, p)) if p.component != "vae" else 0.0
    vae = next((p for p in placements if p.component == "vae"), None)
    if vae is not None:
        per_job_s += _onload_s(spec, vae, _gpu_of(hw, vae))
    job_s = work.total_steps * step_s + per_job_s
    return step_s, job_s, work.total_steps * ideal_step_s


def _text_compute_s(spec: ModelSpec, p: Placement, g, work: Workload) -> float:  # noqa: ANN001
    """Seconds of the UMT5 forwards over the prompt (and the negative one under guidance)."""
    prompts = 2 if work.cfg else 1
    flops = 2 * params_of(spec, p.component) * costs.arch(spec).text_len * prompts
    if g is None:
        return flops / (costs.CPU_TFLOPS * 1e12)
    return flops / (g.tflops * 1e12 * costs.TEXT_MFU)


def phase_times(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], hw: Hardware) -> dict[str, float]:
    """Predicted seconds of each phase of one job (see ``Estimate.phases``)."""
    step_s, _, _ = timing(spec, work, placements, hw)
    by = {p.component: p for p in placements}
    on_gpu = any(p.device != "cpu" for p in placements)
    profile = costs.GPU_PROFILE if on_gpu else costs.CPU_PROFILE
    text = by.get("text_encoder")
    text_s = profile.text_fixed_s
    if text is not None:
        g = _gpu_of(hw, text)
        text_s += _onload_s(spec, text, g) + _text_compute_s(spec, text, g, work)
    steps_s = work.total_steps * step_s + sum(_onload_s(spec, by[c], _gpu_of(hw, by[c])) for c in TRANSFORMERS if c in by)
    vae = by.get("vae")
    g_vae = _gpu_of(hw, vae) if vae is not None else None
    vae_profile = costs.GPU_PROFILE if g_vae else costs.CPU_PROFILE
    if costs.arch(spec).frame_pack and not spec.is_demo:  # speech to video: chunk by chunk
        first, later = costs.s2v_decodes_s(spec, work.width, work.height, work.frames, vae_profile,
                                           g_vae.tflops if g_vae else None)
        decode = first + (work.chunks - 1) * later
    else:
        decode = work.chunks * costs.decode_s(spec, work.width, work.height, work.frames, vae_profile,
                                              g_vae.tflops if g_vae else None)
    if vae is not None:
        decode += _onload_s(spec, vae, g_vae)
    condition = costs.condition_s(spec, work.width, work.height, work.frames, vae_profile,
                                  g_vae.tflops if g_vae else None)
    experts = [by[c] for c in TRANSFORMERS if c in by]
    compiled = [p for p in experts if _gpu_of(hw, p) is not None and costs.compiles(spec, p.storage, p.offload)]
    if compiled:
        compile_s = costs.arch(spec).compile_first_s + costs.COMPILE_MORE_EXPERT_S * (len(compiled) - 1)
    else:
        compile_s = costs.arch(spec).first_call_s if on_gpu else 0.0
    recompile_s = costs.RECOMPILE_NEW_SHAPE_S if compiled else 0.0
    loading = load_s(spec, placements)
    phases = {"load_s": loading, "compile_s": compile_s, "recompile_s": recompile_s,
              "text_s": text_s, "condition_s": condition, "steps_s": steps_s, "decode_s": decode,
              "write_s": costs.write_s(work.width, work.height, work.written_frames, profile)}
    if compiled and warms_while_loading(spec, experts[0]):
        # the first expert's compile runs beside the load; what is left shows in the first step
        first = costs.arch(spec).compile_first_s
        phases["compile_hidden_s"] = max(min(loading, first) - costs.WARMUP_FIRST_STEP_S, 0.0)
        phases["warmup_wait_s"] = max(first - loading, 0.0)  # after the load, for the warm-up
    if not on_gpu:  # a CPU shared with other work gives the job its share
        phases = {k: v * hw.cpu_busy for k, v in phases.items()}
    return phases


def can_warm_up(spec: ModelSpec, transformer: Placement) -> bool:
    """Whether a throwaway block of this transformer can be compiled before its weights load:
    placed on one device, from a Diffusers-layout folder (its configuration is read before the
    weights). ``cluster.runtime.WorkerRuntime.warmup_for`` asks this too."""
    return spec.diffusers_layout and "," not in transformer.device


def warms_while_loading(spec: ModelSpec, transformer: Placement) -> bool:
    """Whether a cold worker compiles this transformer's block while the weights load, as it does
    by default: ``can_warm_up``, on a GPU (the demo is built in code, not loaded)."""
    return can_warm_up(spec, transformer) and not spec.is_demo and transformer.device != "cpu"


def load_s(spec: ModelSpec, placements: tuple[Placement, ...]) -> float:
    """Seconds a fresh worker spends reading the model and pinning what it streams (the demo is
    built in code instead). Model-offloaded components are pinned after the load, in the
    background (``pinned_offload.Pinner``), not counted here."""
    if spec.is_demo:
        return costs.DEMO_BUILD_S
    return sum(stored(spec, p) for p in placements) / costs.LOAD_READ_BYTES_PER_S + pin_s(spec, placements)


def pinned_bytes(spec: ModelSpec, placements: tuple[Placement, ...], when: str = "all") -> int:
    """Bytes of the offloaded components a worker copies into pinned host memory: ``all`` of them,
    those pinned while loading (``load``: the streamed ones, block offload) or after it in the
    background (``behind``: the model-offloaded ones, on a GPU)."""
    modes = {"all": ("model_offload", "group_offload"), "load": ("group_offload",),
             "behind": ("model_offload",)}[when]
    return sum(stored(spec, p) for p in placements if p.offload in modes and not always_on_gpu(p))


def pin_s(spec: ModelSpec, placements: tuple[Placement, ...], bytes_per_s: float | None = None,
          when: str = "load") -> float:
    """Seconds to copy the offloaded components into pinned host memory at ``bytes_per_s``
    (default ``costs.PIN_BYTES_PER_S``; a benchmark passes the rate it measured to re-fit it):
    those the load waits for, or ``when`` as ``pinned_bytes`` takes it."""
    return pinned_bytes(spec, placements, when) / (bytes_per_s or costs.PIN_BYTES_PER_S)


def estimate(spec: ModelSpec, work: Workload, placements: tuple[Placement, ...], hw: Hardware) -> Estimate:
    """Everything the planner compares plans by."""
    step_s, job_s, ideal = timing(spec, work, placements, hw)
    return Estimate(peak_vram(spec, work, placements), host_ram(spec, placements, work), step_s, job_s, ideal,
                    phase_times(spec, work, placements, hw))
