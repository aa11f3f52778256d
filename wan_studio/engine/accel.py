"""Speed knobs: the attention kernel and torch.compile of repeated blocks (both keep the maths), and
an optional bf16 VAE decode (changes the pixels slightly; off unless asked for).

The attention backend is chosen per GPU generation and installed packages, then applied through
diffusers' ``set_attention_backend`` on every transformer of a pipeline (both A14B experts).
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["cudnn", "flash", "flash3", "sage", "xformers", "sdpa"]

# Our names -> diffusers' attention backend names. "sdpa" lets PyTorch pick (FlashAttention-2 on
# recent GPUs); "cudnn" forces PyTorch's cuDNN fused attention.
DIFFUSERS_BACKEND: dict[Backend, str] = {
    "cudnn": "_native_cudnn",
    "flash": "flash",
    "flash3": "_flash_3",
    "sage": "sage",
    "xformers": "xformers",
    "sdpa": "native",
}
# Python packages each backend needs beyond PyTorch.
BACKEND_PACKAGE: dict[Backend, str | None] = {
    "cudnn": None,
    "flash": "flash_attn",
    "flash3": "flash_attn_interface",
    "sage": "sageattention",
    "xformers": "xformers",
    "sdpa": None,
}
# Backends that change the numbers beyond bf16 rounding: offered, never chosen silently.
LOSSY: frozenset[Backend] = frozenset({"sage"})
# Fused kernels that take only bf16/fp16 inputs: PyTorch finds no kernel for a float32 model.
HALF_ONLY: frozenset[Backend] = frozenset({"cudnn", "flash", "flash3", "sage"})


@dataclass(frozen=True)
class AttentionChoice:
    """The backend to use and a one-sentence reason."""

    backend: Backend
    why: str


def installed_backends() -> set[Backend]:
    """Backends whose packages are importable here (cudnn and sdpa come with PyTorch)."""
    found: set[Backend] = set()
    for backend, package in BACKEND_PACKAGE.items():
        if package is None or importlib.util.find_spec(package) is not None:
            found.add(backend)
    return found


def choose_attention_backend(
    compute_capability: tuple[int, int] | None,
    installed: set[Backend] | None = None,
    allow_lossy: bool = False,
) -> AttentionChoice:
    """Pick the fastest exact attention kernel for a GPU of ``compute_capability`` (None: no GPU).

    Hopper gets cuDNN's fused kernel (FlashAttention-3 if installed): measured at Wan shapes on an
    H200, 551–556 TFLOP/s, against 357–365 for the FlashAttention-2 path older PyTorch releases
    took by default (torch 2.11's default already lands on cuDNN; forcing it keeps that choice on
    every release). On Ampere/Ada (RTX 3090/4090) SageAttention (when installed and allowed: it
    quantizes Q/K to int8) or xformers, else PyTorch's SDPA.
    """
    have = installed_backends() if installed is None else set(installed)
    if compute_capability is None:
        return AttentionChoice("sdpa", "no CUDA GPU: PyTorch's scaled-dot-product attention on the CPU")
    major, _minor = compute_capability
    if major >= 9:
        if "flash3" in have:
            return AttentionChoice("flash3", "Hopper GPU with FlashAttention-3 installed")
        return AttentionChoice("cudnn", "Hopper GPU: cuDNN fused attention (~555 TFLOP/s at Wan shapes on an H200)")
    if major >= 8:
        if allow_lossy and "sage" in have:
            return AttentionChoice("sage", "Ampere/Ada GPU with SageAttention installed (int8 Q/K, small quality cost)")
        if "xformers" in have:
            return AttentionChoice("xformers", "Ampere/Ada GPU with xformers installed")
        return AttentionChoice("sdpa", "Ampere/Ada GPU: PyTorch's FlashAttention-2 path")
    return AttentionChoice("sdpa", "older GPU: PyTorch's scaled-dot-product attention")


def transformers_of(pipe: Any) -> list[Any]:
    """Every denoising transformer of a pipeline (one, or both experts of an A14B model)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def apply_attention_backend(pipe: Any, backend: Backend) -> None:
    """Route the attention of every transformer of ``pipe`` through ``backend``.

    Raises ``ValueError`` naming the missing package when the backend is not installed, before
    any module is changed.
    """
    package = BACKEND_PACKAGE[backend]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(f"attention backend '{backend}' needs the Python package '{package}'; install it or pick another")
    if _needs_half_but_fp32(pipe, backend):
        raise ValueError(f"attention backend '{backend}' needs bf16 or fp16 weights and this model runs in "
                         "float32; pick 'sdpa'")
    own = own_attention(pipe)
    if own and backend != "sdpa":
        raise ValueError(f"attention backend '{backend}' cannot be set on {own}: it calls PyTorch's "
                         "scaled-dot-product attention itself; pick 'sdpa'")
    for model in transformers_of(pipe):
        if hasattr(model, "set_attention_backend"):
            model.set_attention_backend(DIFFUSERS_BACKEND[backend])


def own_attention(pipe: Any) -> str | None:
    """The class name of a transformer of ``pipe`` that is not a diffusers model and so has no
    attention backends to set (the speech-to-video one), else ``None``."""
    return next((type(m).__name__ for m in transformers_of(pipe) if not hasattr(m, "set_attention_backend")), None)


def _needs_half_but_fp32(pipe: Any, backend: Backend) -> bool:
    """True when ``backend`` takes only bf16/fp16 and a transformer of ``pipe`` computes in float32
    (no bf16/fp16/fp8 parameter at all)."""
    import torch

    if backend not in HALF_ONLY:
        return False
    for model in transformers_of(pipe):
        dtypes = {p.dtype for p in model.parameters()}
        if torch.float32 in dtypes and not any(d.is_floating_point and d.itemsize <= 2 for d in dtypes):
            return True
    return False


def attention_error(backend: Backend, device: str = "cuda", tokens: int = 4096, heads: int = 24,
                    head_dim: int = 128, seed: int = 0) -> float:
    """Relative error of ``backend`` against plain SDPA in fp32 on random bf16 inputs.

    bf16 rounding alone gives ~3e-3; a correct kernel stays well under 2e-2.
    """
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, generator=g, device=device, dtype=torch.bfloat16)
               for _ in range(3))
    ref = dispatch_attention_fn(q.float(), k.float(), v.float(), backend="_native_math")
    out = dispatch_attention_fn(q, k, v, backend=DIFFUSERS_BACKEND[backend]).float()
    return float((out - ref).norm() / ref.norm())


def compile_transformers(pipe: Any, offload: str = "resident", **compile_kwargs: Any) -> int:
    """``torch.compile`` the repeated blocks of every transformer; return how many models were compiled.

    Whole-graph capture is used only when the weights stay put: with block-group offload the
    offload hooks run between blocks, so the graph may break there.
    """
    fullgraph = offload in ("resident", "model")
    compile_kwargs.setdefault("fullgraph", fullgraph)
    # diffusers models name their repeated blocks; one without them (speech to video) stays eager
    models = [m for m in transformers_of(pipe) if getattr(m, "_repeated_blocks", None)]
    for model in models:
        if offload == "group":
            for block in model.modules():
                if type(block).__name__ in model._repeated_blocks:
                    compile_below_hooks(block, **compile_kwargs)
        else:
            model.compile_repeated_blocks(**compile_kwargs)
    return len(models)


def compile_below_hooks(block: Any, **compile_kwargs: Any) -> None:
    """Compile ``block``'s own forward, under the diffusers hooks wrapped around it.

    ``nn.Module.compile`` traces the hooks too. Block offload gives every block a hook holding its
    own offload group, so the traced code guards on that group: one graph per block (two for two
    blocks on the tiny model, tests/engine/test_compile_hooks.py), past torch._dynamo's recompile
    limit of 8 on a 30- or 40-block model, after which the blocks ran eager. Compiled below the
    hooks, every block shares one graph and the hooks (device moves, stream waits) run as Python.
    """
    import torch

    # A cached pipeline compiled whole under an earlier plan (resident or model offload) and now
    # re-placed under block offload would run that whole-block graph through the new hooks; with
    # fullgraph it fails at the hook's compiler-disabled onload. Drop it: this compile replaces it.
    block._compiled_call_impl = None
    refs = getattr(getattr(block, "_diffusers_hook", None), "_fn_refs", None)
    if not refs or refs[0].original_forward is not None:  # no hooks, or the first replaces the forward
        block.compile(**compile_kwargs)
        return
    refs[0].forward = torch.compile(refs[0].forward, **compile_kwargs)


@functools.cache
def _epilogue_gelu_class() -> type:
    from diffusers.models.activations import GELU
    import torch

    class EpilogueGELU(GELU):
        """diffusers' GELU projection with the tanh GELU applied in the matmul's epilogue (cuBLASLt) on
        a CUDA GPU: the (tokens × ffn) activation is written once instead of written, read back and
        written again. Anything else (CPU, fp8 storage, a LoRA-wrapped projection) runs as before."""

        def forward(self, hidden_states: Any) -> Any:
            proj = self.proj
            if (hidden_states.is_cuda and type(proj) is torch.nn.Linear and proj.bias is not None
                    and hidden_states.dtype in (torch.bfloat16, torch.float16)
                    and proj.weight.dtype == proj.bias.dtype == hidden_states.dtype):
                flat = hidden_states.reshape(-1, hidden_states.shape[-1])
                out = torch._addmm_activation(proj.bias, flat, proj.weight.t(), use_gelu=True)
                return out.view(*hidden_states.shape[:-1], out.shape[-1])
            return super().forward(hidden_states)

    return EpilogueGELU


def fuse_ffn_gelu(pipe_or_model: Any) -> int:
    """Give every tanh-GELU feed-forward projection of the transformer(s) a fused GELU epilogue;
    return how many were changed. Weights, names and hooks stay as they are."""
    from diffusers.models.activations import GELU

    models = transformers_of(pipe_or_model) or [pipe_or_model]
    fused_class = _epilogue_gelu_class()
    n = 0
    for model in models:
        for module in model.modules():
            if type(module) is GELU and module.approximate == "tanh":
                module.__class__ = fused_class
                n += 1
    return n


DecodePrecision = Literal["fp32", "bf16"]


@contextmanager
def decode_precision(pipe: Any, precision: DecodePrecision = "fp32") -> Iterator[bool]:
    """Run the pipeline's VAE decodes in ``precision`` while the block runs; yields whether it changed.

    ``bf16`` wraps ``vae.decode`` in bf16 autocast: convolutions run in bf16 while the stored
    weights stay fp32 (so the next fp32 job decodes exactly as before) and the frames come back in
    fp32. Measured on an H200 with a bf16 copy of the Wan2.2 VAE: 1.35× faster tiled 720p decode at
    PSNR 81 dB against fp32 (docs/BENCHMARKS.md, bench/speed.py). ``fp32`` (the default, as the
    model authors run it) leaves the VAE alone.
    """
    import torch

    vae = getattr(pipe, "vae", None)
    if precision != "bf16" or vae is None:
        yield False
        return
    original = vae.decode

    def decode(z: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=z.device.type, dtype=torch.bfloat16):
            out = original(z, *args, **kwargs)
        if isinstance(out, tuple):
            return tuple(x.float() if torch.is_tensor(x) else x for x in out)
        if getattr(out, "sample", None) is not None:
            out.sample = out.sample.float()
        return out

    vae.decode = decode
    try:
        yield True
    finally:
        del vae.decode  # the class's method again


Switch = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class SpeedOptions:
    """User choices for the speed knobs; ``auto`` lets the app decide per GPU and plan."""

    attention: Backend | Literal["auto"] = "auto"
    compile: Switch = "auto"
    allow_lossy_attention: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a worker's configuration."""
        return {"attention": self.attention, "compile": self.compile, "allow_lossy_attention": self.allow_lossy_attention}


def _checked_backend(backend: Backend) -> tuple[Backend, str]:
    """``backend`` if it runs here and agrees with exact attention, else SDPA with the reason.

    The check narrows PyTorch's process-wide attention flags: the caller holds
    ``engine.warmup.ATTENTION_TURN`` (``apply_speed`` does)."""
    try:
        err = attention_error(backend, device="cuda", tokens=512, heads=8, head_dim=128)
    except Exception as e:  # noqa: BLE001 - a broken kernel package must not stop the job
        return "sdpa", f"{backend} failed its check ({type(e).__name__}); using PyTorch SDPA"
    if backend not in LOSSY and err > 2e-2:
        return "sdpa", f"{backend} differs from exact attention by {err:.1e}; using PyTorch SDPA"
    return backend, f"checked against exact attention: relative error {err:.1e}"


def apply_speed(pipe: Any, offload_modes: set[str], storage: str, options: SpeedOptions = SpeedOptions()) -> dict[str, Any]:
    """Set the attention kernel and compile the repeated blocks of a placed pipeline (CUDA only).

    ``offload_modes`` are the transformers' (``transformer_offload``). Compile ``auto`` is on where
    it was measured to pay, with Triton installed and bf16 weights: resident or model offload (1.19×
    per TI2V-5B 720p step on an H200, 10.6 s once per loaded model) and block offload (diffusers
    keeps its hooks out of the graph; an A14B expert's 720p blocks 1.09× faster). fp8 and 8-bit
    weights stay eager. Returns what was done, for the job's sidecar; the same record is kept on the
    pipeline as ``wan_speed``.
    """
    import torch

    record: dict[str, Any] = {"attention": "sdpa", "compile": False}
    if not torch.cuda.is_available() or not transformers_of(pipe):
        record["why"] = "no CUDA GPU: defaults"
        pipe.wan_speed = record
        return record
    cc = torch.cuda.get_device_capability()
    if options.attention == "auto":
        choice = choose_attention_backend(cc, allow_lossy=options.allow_lossy_attention)
        backend, why = choice.backend, choice.why
    else:
        backend, why = options.attention, "chosen by the user"
    if _needs_half_but_fp32(pipe, backend):
        backend, why = "sdpa", f"float32 model: {backend} needs bf16/fp16 inputs, so PyTorch's SDPA"
    own = own_attention(pipe)
    if own and backend != "sdpa":
        backend, why = "sdpa", f"{own} calls PyTorch's scaled-dot-product attention itself"
    if backend != "sdpa":
        # The load's thread checks the kernel while a compile warm-up may be running attention on
        # another: it waits for its turn (engine.warmup.ATTENTION_TURN), and says so when it did.
        from wan_studio.engine.warmup import ATTENTION_TURN

        t0 = time.perf_counter()
        with ATTENTION_TURN:
            waited = time.perf_counter() - t0
            if waited > 0.05:
                record["attention_check_waited_s"] = round(waited, 3)
            backend, check = _checked_backend(backend)
    else:
        check = "PyTorch default"
    apply_attention_backend(pipe, backend)
    record.update(attention=backend, attention_why=why, attention_check=check)
    record["gelu_epilogue"] = fuse_ffn_gelu(pipe) > 0
    from wan_studio.memory.costs import COMPILE_OFFLOADS, triton_installed

    pays = offload_modes <= COMPILE_OFFLOADS and storage == "bf16"
    want = options.compile == "on" or (options.compile == "auto" and pays and triton_installed())
    if want:
        offload = "model" if "model_offload" in offload_modes else ("resident" if offload_modes <= {"resident"} else "group")
        record["compile"] = compile_transformers(pipe, offload) > 0
    pipe.wan_speed = record
    return record


def transformer_offload(plan: Any) -> set[str]:
    """How the plan brings its transformer(s) to the GPU (what compile depends on)."""
    from wan_studio.memory.plan import TRANSFORMERS

    return {p.offload for p in plan.placements if p.component in TRANSFORMERS}


def plan_applier(options: SpeedOptions = SpeedOptions()) -> Any:
    """The manager's ``apply`` step: place the pipeline as the memory plan says, then speed it up."""
    from wan_studio.memory.apply import apply_plan

    def apply(pipe: Any, plan: Any) -> None:
        apply_plan(pipe, plan)
        apply_speed(pipe, transformer_offload(plan), plan.storage, options)

    return apply
