"""Apply a ``Plan`` to a diffusers pipeline with diffusers' and accelerate's own memory features.

Storage (fp8 layerwise casting, bitsandbytes 8-bit) is a property of a loaded component and is set
when the manager loads it (``apply_storage`` / ``quantization_config``); placement (resident,
model / group / sequential offload, a second GPU, a split across GPUs) is set here on an assembled
pipeline, and ``release_component`` undoes it so a shared component can join another pipeline.
"""

from __future__ import annotations

from typing import Any

import torch

from wan_studio.memory.plan import TRANSFORMERS, Placement, Plan

GROUP_OFFLOAD_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


class PlanError(ValueError):
    """The plan cannot be applied to this pipeline as written (checked before anything changes)."""


def apply_storage(module: torch.nn.Module, storage: str) -> None:
    """Store ``module``'s weights as ``storage``; fp8 keeps computing in the module's dtype.

    bf16/fp32 need nothing; int8 is chosen at load time (bitsandbytes quantizes while reading).
    """
    if storage == "fp8":
        compute = next(module.parameters()).dtype
        if hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        else:  # our own modules (speech to video): the same diffusers hook, default skip patterns
            from diffusers.hooks import apply_layerwise_casting

            apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)


def check_plan(pipe: Any, plan: Plan) -> list[Placement]:
    """The placements that apply to ``pipe``; raise ``PlanError`` for a plan diffusers cannot do."""
    present = [p for p in plan.placements if isinstance(getattr(pipe, p.component, None), torch.nn.Module)]
    modes = {p.offload for p in present}
    if "sequential" in modes and (len(modes) > 1 or len({p.device for p in present}) > 1):
        raise PlanError("sequential offload moves the whole pipeline to one device; it cannot be mixed with "
                        f"{sorted(modes - {'sequential'})} or several devices")
    primary = plan.primary_device
    if "model_offload" in modes and len({d for p in present for d in p.devices}) > 1:
        # one seat on one GPU: components taking turns there cannot be mixed with other devices
        raise PlanError("model offload swaps components on one GPU; it cannot be mixed with components "
                        f"on several devices ({', '.join(sorted({d for p in present for d in p.devices}))})")
    vae = plan.placement("vae")
    # The pipeline calls vae.decode (not forward), which device hooks do not see: keep it on the
    # device the latents live on.
    if vae is not None and vae.device != primary:
        raise PlanError(f"the VAE must sit on the primary device {primary}, not {vae.device}")
    return present


def apply_plan(pipe: Any, plan: Plan) -> None:
    """Place every component of ``pipe`` as ``plan`` says; enable VAE tiling if planned."""
    present = check_plan(pipe, plan)
    modes = {p.offload for p in present}
    primary = torch.device(plan.primary_device)
    if "sequential" in modes:
        pipe.enable_sequential_cpu_offload(device=primary)
    else:
        from wan_studio.memory.pinned_offload import enable_pinned_offload, evict_seat_before, host_memory

        host = host_memory()  # one page-locked budget for every offloaded component of the pipeline
        seat = None
        seated = [p.component for p in present if p.offload == "model_offload"]
        if seated:  # diffusers' policy, with the CPU copies kept pinned (memory/pinned_offload.py)
            # on a GPU pinned in the background, after the placement: the first job need not wait
            seat = enable_pinned_offload(pipe, primary, seated, host, lazy=primary.type == "cuda")[0].seat
        for p in present:
            if p.offload == "model_offload":
                continue
            place_component(getattr(pipe, p.component), p, plan, host)
            if seat is not None and p.device == plan.primary_device:
                # Whatever sits in the seat (the text encoder after the prompt) leaves the GPU before
                # this component runs there: the planner counts it only in its own phase.
                evict_seat_before(getattr(pipe, p.component), seat)
        if len({d for p in present for d in p.devices}) > 1:
            _align_devices(pipe, present, plan)
        if seat is not None and seat.pinner is not None:
            seat.pinner.start()  # the streamed components took their pinned copies first
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        size, stride = plan.vae_tile
        pipe.vae.enable_tiling(size, size, stride, stride)


def place_component(module: torch.nn.Module, p: Placement, plan: Plan | None = None, host: Any = None) -> None:
    """Place one component as ``p`` says (not model or sequential offload, which are pipeline-wide);
    ``host``: the page-locked budget to share (``pinned_offload.host_memory``)."""
    if p.offload in ("resident", "cpu"):
        module.to(p.device)
    elif p.offload == "group_offload":
        dev = torch.device(p.device)
        # low_cpu_mem_usage: diffusers keeps the weights where they are instead of pinning a copy of
        # each tensor (rounded up to a power of two: host use of the A14B 720p plan reached 125 of
        # 128 GB on the H200 machine); pack_group_offload_copies then pins them packed.
        kwargs: dict[str, Any] = dict(onload_device=dev, offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=1,
                                      use_stream=dev.type == "cuda", low_cpu_mem_usage=dev.type == "cuda")
        if hasattr(module, "enable_group_offload"):
            module.enable_group_offload(**kwargs)
        else:  # transformers' UMT5 encoder: the same diffusers hook, applied from outside
            from diffusers.hooks import apply_group_offloading

            # diffusers streams the lists among the children of the module it is given; UMT5's blocks
            # are one level down (``encoder.block``), so given the model, the whole 10.6 GiB encoder
            # moved as one group through pageable memory for each prompt (S2V-14B on an H200: 14.63
            # GiB peak, 21 s for two prompts). Given its encoder stack, the blocks stream and the
            # token embedding (the model's ``shared``, the same module) moves with the stack's own
            # layers. (diffusers' ``block_modules`` would nest two prefetch tracers, which fails.)
            stack = getattr(module, "encoder", None)
            target = stack if isinstance(getattr(stack, "block", None), torch.nn.ModuleList) else module
            embed = getattr(target, "embed_tokens", None) if target is stack else None
            if isinstance(embed, torch.nn.Embedding):
                # The token embedding (2.1 GB of UMT5-XXL's 11.4) stays on the CPU: a prompt needs
                # 512 of its 256,384 rows. Left in the stack's own layers, diffusers moved all of it
                # through pageable memory and back for every prompt (no stream for those): 2.9 GiB
                # peak and ~1.7 s a prompt on an H200 (bench/text_offload.py).
                del target._modules["embed_tokens"]
                try:
                    apply_group_offloading(target, **kwargs)
                finally:
                    target._modules["embed_tokens"] = embed
                embed_on_host(embed, dev)
            else:
                apply_group_offloading(target, **kwargs)
        if p.component in TRANSFORMERS:
            keep_top_level_on_gpu(module)
        if dev.type == "cuda":
            from wan_studio.memory.pinned_offload import host_memory, pack_group_offload_copies

            pack_group_offload_copies(module, host if host is not None else host_memory())
    elif p.offload == "balanced":
        if plan is None:
            raise PlanError(f"splitting {p.component} across {p.device} needs the whole plan")
        _split(module, p, plan)
    else:
        raise PlanError(f"unknown offload mode {p.offload!r} for {p.component}")


EMBED_HOOKS = "_wan_embed_on_host"


def embed_on_host(embed: torch.nn.Embedding, device: torch.device) -> None:
    """Run ``embed`` where its weight is (the CPU): token ids go there, the looked-up rows come
    back to ``device``. ``release_component`` takes the hooks off again."""
    remove_embed_on_host(embed)
    embed.to("cpu")
    pre = embed.register_forward_pre_hook(lambda m, args: tuple(a.to(m.weight.device) for a in args))
    post = embed.register_forward_hook(lambda m, args, out: out.to(device))
    setattr(embed, EMBED_HOOKS, (pre, post))


def remove_embed_on_host(module: torch.nn.Module) -> None:
    """Undo ``embed_on_host`` on every embedding in ``module``."""
    for sub in module.modules():
        for handle in sub.__dict__.pop(EMBED_HOOKS, ()):
            handle.remove()


def keep_top_level_on_gpu(module: torch.nn.Module) -> bool:
    """Under block offload, put the model's own layers around its blocks on the GPU and leave them
    there; True if done.

    diffusers streams the repeated blocks with prefetch, but moves the rest (patch and time/text
    embedders, output head: 90 M parameters in TI2V-5B, 232 M in an A14B expert, 2.0 B in S2V-14B
    with its audio injector) with blocking, pageable copies before and after every forward: 0.67 s
    of copies per A14B 720p step on an H200 (bench/step_profile.py). Kept on the GPU they cost their
    size once; the planner counts them there for the whole job (``estimate.held_on_gpu``). They go
    there now, with the placement, not at the first forward: otherwise a worker's first job encoded
    its prompt without them and its next job with them (S2V-14B 832×480: 11.15 against 14.63 GiB),
    and the first step paid the copy.
    """
    from wan_studio.memory.pinned_offload import offload_group

    group = offload_group(module)
    if group is None or getattr(group, "stream", None) is not None or group.onload_leader is not module:
        return False
    group.offload_device = group.onload_device  # offloading becomes a no-op
    group.onload_()
    return True


def _split(module: torch.nn.Module, p: Placement, plan: Plan) -> None:
    """Split ``module`` block-wise across its GPUs with accelerate's balanced placement."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(module, "_no_split_modules", None) or [])
    free: dict[int | str, int] = {}
    for d in p.devices:
        index = torch.device(d).index
        free[index] = torch.cuda.mem_get_info(index)[0]
    budget = get_balanced_memory(module, max_memory=free, no_split_module_classes=no_split)
    device_map = infer_auto_device_map(module, max_memory=budget, no_split_module_classes=no_split)
    if any(v in ("cpu", "disk") for v in device_map.values()):
        raise PlanError(f"{p.component} does not fit across {p.device}")
    dispatch_model(module, device_map=device_map, main_device=plan.primary_device)


def _align_devices(pipe: Any, present: list[Placement], plan: Plan) -> None:
    """Components on another GPU (or left on the CPU) get accelerate's device-alignment hook:
    inputs moved to them, outputs moved back.

    The VAE (first in the pipeline's component order) gets one on the primary device, so the
    pipeline's execution device — where latents are created — is the primary GPU.
    """
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    for p in present:
        if p.offload not in ("resident", "cpu"):
            continue
        if p.device != plan.primary_device or p.component == "vae":
            add_hook_to_module(getattr(pipe, p.component),
                               AlignDevicesHook(execution_device=p.device, io_same_device=True))


def release_component(module: torch.nn.Module) -> None:
    """Remove placement hooks from ``module`` and bring it back to the CPU (storage stays)."""
    from accelerate.hooks import remove_hook_from_module

    from wan_studio.memory.pinned_offload import remove_seat_eviction

    remove_hook_from_module(module, recurse=True)
    remove_seat_eviction(module)
    remove_embed_on_host(module)
    # Group offload may hook only submodules (the VAE's inner block lists), so visit them all.
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None:
            for name in GROUP_OFFLOAD_HOOKS:
                registry.remove_hook(name, recurse=False)
    if not getattr(module, "is_loaded_in_8bit", False):
        module.to("cpu")


def release_pipeline(pipe: Any) -> None:
    """Undo ``apply_plan`` on every component of ``pipe``."""
    if hasattr(pipe, "remove_all_hooks"):
        pipe.remove_all_hooks()
    for value in pipe.components.values():
        if isinstance(value, torch.nn.Module):
            release_component(value)
