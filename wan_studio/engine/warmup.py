"""Compile a cold worker's transformer blocks while its weights are still loading.

The transformer is compiled per block (``accel.compile_transformers``). torch._dynamo keeps what it
compiled on the block's code object and, with ``inline_inbuilt_nn_modules`` (the default), takes a
block's parameters as inputs of the graph rather than constants, so any block of the same class,
configuration and speed knobs, run at the same shapes, reuses the graph. A fresh worker's first job
paid 13-17 s of compile in its first step, after ~23 s of reading and pinning the weights
(docs/BENCHMARKS.md, "First video"). Here a throwaway transformer of one block, built from the
model's configuration with random weights on the GPU, is set up exactly as ``apply_speed`` will set
up the real one and run once at the job's shapes on a thread of its own, while the real weights are
read and pinned; the real first step then finds the graph compiled.

The warm-up is an optimisation only: any failure in it is caught and reported in the sidecar, and
the job runs as it would have (compiling in its first step).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

# diffusers' Wan pipelines pad every prompt to this many tokens (``max_sequence_length``).
TEXT_TOKENS = 512
# A job waits at most this long for a warm-up still running after its load (a cold compile of
# TI2V-5B's block took 13-17 s on an H200); past it the job goes on and compiles as before.
WAIT_LIMIT_S = 180.0
# While a warm-up traces (pure Python, holding the GIL in turns of ``sys.getswitchinterval()``, 5 ms
# by default), every torch call of the thread loading the weights hands the GIL over and waits up
# to a turn to get it back: page-locking 2 GB of weights took 5.8 s beside a busy thread against
# 0.47 s alone on an H200 (bench/pin_rate.py), a TI2V-5B's 24 GB 12.9 s. With turns this short
# while a warm-up runs it took 0.90 s beside the busy thread (1.11 s alone on that machine); the
# previous interval comes back when no warm-up runs.
WARMUP_SWITCH_INTERVAL_S = 2e-4
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = 0.0
# PyTorch keeps the attention backends ``sdpa_kernel`` allows in process-wide flags, not per thread,
# and a transformer set to a fused backend (``_native_cudnn``) narrows them around each of its
# attention calls, compiled or not. A warm-up beside a job's text encoder made the encoder's
# attention find no kernel ("No available kernel"), and two of them interleaved left the flags
# narrowed for good (each restores what it found). So a warm-up, the attention check of a model's
# load (``accel.apply_speed``, run by the thread placing the weights while a warm-up compiles) and a
# job's pipeline call take turns on this lock: one of them runs attention in the process at a time.
# Re-entrant: a warm-up's own set-up runs the same check on its thread.
ATTENTION_TURN = threading.RLock()


def _short_turns(enter: bool) -> None:
    """Count a warm-up in (``enter``) or out; the first in shortens the GIL's turns, the last out
    puts them back."""
    global _switch_users, _switch_before
    with _switch_lock:
        if enter:
            if _switch_users == 0:
                _switch_before = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_before, WARMUP_SWITCH_INTERVAL_S))
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


@dataclass(frozen=True)
class WarmupShapes:
    """What the pipeline hands a Wan transformer in one forward: the latents (channels, frames,
    height, width, all in latent units), the prompt's tokens, and whether the timestep is one per
    token (Wan2.2 TI2V, ``expand_timesteps``) or one per sample."""

    latent: tuple[int, int, int, int]
    per_token_timestep: bool
    text_tokens: int = TEXT_TOKENS


def shapes_for(config: Any, width: int, height: int, frames: int, spatial_down: int,
               per_token_timestep: bool) -> WarmupShapes:
    """The shapes of a job of ``width`` × ``height`` pixels × ``frames`` for a transformer of
    ``config``; ``spatial_down``: pixels per token side (VAE × patch, ``costs.arch``)."""
    patch = tuple(config["patch_size"])
    latent_down = spatial_down // patch[1]
    return WarmupShapes((int(config["in_channels"]), (frames - 1) // 4 + 1, height // latent_down,
                         width // latent_down), per_token_timestep)


def run_throwaway(model_cls: type, config: Any, shapes: WarmupShapes, prepare: Callable[[Any], bool],
                  device: str, dtype: Any) -> bool:
    """Build a one-block ``model_cls`` of ``config`` with random weights on ``device`` in ``dtype``,
    let ``prepare`` set it up as the job's transformer will be (attention, compile; False: nothing
    to warm), and run it once at ``shapes`` as the pipeline calls it. True when it ran."""
    import torch

    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    cfg["num_layers"] = 1
    with torch.device(device):
        model = model_cls.from_config(cfg)
    model = typed_as_loaded(with_real_weights(model, device), dtype).eval()
    if not prepare(model):
        return False
    c, f, h, w = shapes.latent
    hidden = torch.randn(1, c, f, h, w, device=device, dtype=dtype)
    text = torch.randn(1, shapes.text_tokens, int(cfg["text_dim"]), device=device, dtype=dtype)
    patch = tuple(cfg["patch_size"])
    if shapes.per_token_timestep:  # as diffusers' pipeline builds it: a float mask times t, flattened
        tokens = f * (h // patch[1]) * (w // patch[2])
        timestep = torch.full((1, tokens), 999.0, device=device, dtype=torch.float32)
    else:
        timestep = torch.tensor([999], device=device, dtype=torch.int64)
    # As a job runs the pipeline: its no_grad inside the job's inference mode. Both are dynamo's
    # guards: the grad mode, and the dispatch keys of every tensor the block gets (an inference
    # tensor has no autograd keys); under no_grad alone the real first step compiled again.
    with torch.inference_mode(), torch.no_grad():
        model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, return_dict=False)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    del model, hidden, text
    return True


def with_real_weights(model: Any, device: str) -> Any:
    """``model`` with every parameter that came out on the meta device made a random one on
    ``device``. The real weights load on another thread meanwhile, and accelerate's
    ``init_empty_weights``, which a load enters, makes every parameter the process registers a meta
    one while it is entered, ours too; the dict is written directly so its patch is not met again.
    Buffers are not touched (built for real, as the rotary tables must be)."""
    import torch

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                real = torch.empty(param.shape, dtype=param.dtype, device=device).normal_(0.0, 0.02)
                module._parameters[name] = torch.nn.Parameter(real, requires_grad=param.requires_grad)
    return model


def typed_as_loaded(model: Any, dtype: Any) -> Any:
    """``model`` with the dtypes ``from_pretrained(torch_dtype=dtype)`` gives the real one (dtypes
    are guards of the graph, like shapes and ``requires_grad``, which stays as loaded): floating
    parameters in ``dtype`` except those of ``_keep_in_fp32_modules``, kept in float32; buffers as
    built."""
    import torch

    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, param in model.named_parameters():
        if param.is_floating_point():
            fp32 = dtype != torch.float32 and any(k in name.split(".") for k in keep)
            param.data = param.data.to(torch.float32 if fp32 else dtype)
    return model


def speed_preparer(offload_modes: set[str], storage: str, options: Any) -> Callable[[Any], bool]:
    """``run_throwaway``'s ``prepare`` for a job placed with ``offload_modes`` (the plan's
    transformer offloads) and ``storage``: ``accel.apply_speed`` as the real transformer gets it.
    Under block offload the real blocks are compiled below their offload hooks (their own
    ``forward``), so the throwaway's blocks are compiled the same way, not through ``__call__``."""
    from wan_studio.engine import accel

    def prepare(model: Any) -> bool:
        record = accel.apply_speed(SimpleNamespace(transformer=model), offload_modes, storage, options)
        if not record.get("compile"):
            return False
        # the same choice as apply_speed: block offload unless model offload or all resident
        if "model_offload" not in offload_modes and not offload_modes <= {"resident"}:
            compile_as_hooked(model, fullgraph=False)
        return True

    return prepare


def compile_as_hooked(model: Any, **compile_kwargs: Any) -> int:
    """Compile each repeated block of a throwaway ``model`` (no offload hooks) as
    ``accel.compile_below_hooks`` compiles a block under block offload: its own ``forward``, not
    ``__call__`` (a different code object, so a different dynamo cache). Returns how many."""
    import torch

    n = 0
    for block in model.modules():
        if type(block).__name__ in getattr(model, "_repeated_blocks", ()):
            block._compiled_call_impl = None
            block.forward = torch.compile(block.forward, **compile_kwargs)
            n += 1
    return n


class CompileWarmup:
    """One warm-up on a thread of its own: ``start`` it before the weights load, ``wait`` for it
    before the first step (so the job never compiles the same graph beside it). Never raises: the
    outcome is in ``record`` (``ran``, ``s``, or ``skipped`` / ``failed`` with the reason)."""

    def __init__(self, work: Callable[[], bool]) -> None:
        self._work = work
        self.record: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="compile-warmup", daemon=True)

    def start(self) -> CompileWarmup:
        """Begin the warm-up in the background; returns itself."""
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        _short_turns(True)
        try:
            with ATTENTION_TURN:
                ran = self._work()
            self.record = {"ran": bool(ran), "s": round(time.perf_counter() - t0, 3)}
            if not ran:
                self.record["skipped"] = "nothing to compile for this plan"
        except Exception as e:  # noqa: BLE001 - an optimisation: the job compiles in its first step instead
            self.record = {"ran": False, "failed": f"{type(e).__name__}: {e}"[:300],
                           "s": round(time.perf_counter() - t0, 3)}
        finally:
            _short_turns(False)
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - freeing the throwaway's cache is best effort
                pass

    def wait(self, timeout_s: float | None = WAIT_LIMIT_S) -> dict[str, Any]:
        """Wait for the warm-up (seconds waited are added as ``waited_s``); its record."""
        t0 = time.perf_counter()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        record = dict(self.record) if self.record else {"ran": False, "failed": "still running"}
        record["waited_s"] = round(time.perf_counter() - t0, 3)
        return record


def start_compile_pool(device: str, speed: dict[str, Any], warmup: bool | None) -> bool:
    """Start Inductor's pool of compile processes now, at a GPU worker's start, when its jobs may
    compile (``speed["compile"]`` not off, warm-ups not switched off); True when started.

    Inductor starts the pool itself when its backend is first called, after dynamo's trace, and
    compiles kernels in the calling process until the pool is up. Started seconds before (the
    worker's imports and the model's load come between), the warm-up of TI2V-5B's block at 720p took
    7.9 s against 11.3 s, with one compile thread 10.2 s (H200, empty caches, one fresh process per
    case: ``bench/warmup_cost.py``). Anything failing here leaves Inductor to start it as before."""
    if not device.startswith("cuda") or speed.get("compile", "auto") == "off" or warmup is False:
        return False
    try:
        from torch._inductor.async_compile import maybe_warm_pool

        maybe_warm_pool()
        return True
    except Exception:  # noqa: BLE001 - an optimisation only
        return False
