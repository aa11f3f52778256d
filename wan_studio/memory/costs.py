"""The byte and time model behind the planner: weights, activations, transfers, per phase.

Every constant that is not arithmetic on a config is calibrated from a GPU measurement and says
which one (``/work/shared/WAN22_FACTS.md``, H200 with a 24 GB cap; ``bench/run_plan.py`` prints
predicted next to measured so they can be re-fitted).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from wan_studio.catalog.specs import ComponentSpec, ModelSpec

GIB = 2**30

# --- activation model -----------------------------------------------------------------------
# Peak transient bytes of one transformer forward = tokens × dim × the architecture's bytes per
# token-dim, plus TIMESTEP_BYTES_PER_TOKEN_DIM when the timestep is per token (TI2V-5B with a start
# image: its expand_timesteps makes a (tokens, 6·dim) modulation tensor instead of (1, 6·dim)).
# T2V-A14B 832×480×81, fp8 storage + model offload: 17.5 GiB peak − 13.52 GiB fp8 expert
#   (14.29e9 B + 0.23e9 B of embedders kept in bf16) = 3.98 GiB over 32,760 tokens × 5120 dims.
ACT_BYTES_PER_TOKEN_DIM = 25.5
# TI2V-5B, model offload, cuDNN attention and compiled blocks, H200, 24 GiB cap, through the worker
#   (bench/size_menu.py, 2026-12-02): a text job's transformer phase stays under the 12.83 GiB of
#   the text phase up to 1920×1088×121 (63,240 tokens): ≤ 3.52 GiB over 63,240 × 3072 → ≤ 19.4 B
#   (the 45.1 B fitted on 2026-11-26 was the text phase's peak, read as the transformer's). From an
#   image (a timestep per token) 1920×1088×121 peaks at 16.36 GiB: 7.05 GiB over 63,240 × 3072 =
#   39.0 B; 1920×1088×241 from an image (124,440 tokens, block offload) peaks at 13.68 GiB, less per
#   token. The per-token modulation is (tokens, 6, dim) in fp32 (24 B, not all of it live at the
#   peak): 21 B fits both rows (-3 % and +6 %); the other 15 B are the rest of the forward, which
#   keeps the text job's phase under its bound.
TI2V_ACT_BYTES_PER_TOKEN_DIM = 15.0
TIMESTEP_BYTES_PER_TOKEN_DIM = 21.0
# Group offload (block level, one block per group, CUDA stream): blocks on the GPU at once besides
# the non-block layers. T2V-A14B 1280×720×81 bf16: 12.8 GiB peak − 9.19 GiB activations − 0.47 GiB
# non-block layers = 3.1 GiB ≈ 5 blocks of 0.654 GiB.
GROUP_BLOCKS_IN_FLIGHT = 5
# A block-offloaded UMT5's blocks on the GPU at once: the one computing and the one prefetched.
TEXT_BLOCKS_IN_FLIGHT = 2
# Text encoding phase beyond the UMT5 weights (10.58 GiB bf16, its token embedding tied as in real
# checkpoints; 512 tokens, two prompts). S2V-14B, whose encoder is read from the official release's
# layout and tied by the loader, peaked at 11.15 GiB in a cold job's text phase (H200, 24 GiB cap,
# 2026-12-02): 0.57 GiB. The Diffusers-layout benchmark builds measured 12.83 GiB before their
# embedding was tied (bench's random fill held it twice: 1.96 GiB more), i.e. 0.29 GiB of work;
# the larger figure is kept.
TEXT_WORK_BYTES = int(0.57 * GIB)
TILED_DECODE_WORK_BYTES = {"wan2.1": int(1.5 * GIB), "wan2.2": int(3.0 * GIB)}
# VAE decode tiles (min, stride) in pixels. diffusers' default 256/192 decodes ~1.65× the pixels
# of a 1280×704 frame (overlaps, cut edge tiles); 512/448 ~1.2×. Measured on an H200 for the Wan2.2
# VAE at 1280×704×121, fp32 (`bench/speed.py --parts decode`): 18.0 s → 11.7 s, peak 8.35 → 10.36
# GiB, so the bigger tile is used whenever the decode phase still fits with that much more.
# Copies of the fp32 video the host holds at the end of a decode: the tiles (overlaps included,
# ≈1.65× at the default tile), the blended result and its un-patched copy.
DECODE_HOST_VIDEOS = 3.7
DEFAULT_DECODE_TILE = (256, 192)
BIG_DECODE_TILE = {"wan2.2": (512, 448)}
BIG_TILE_EXTRA_BYTES = {"wan2.2": int(2.0 * GIB)}
# CUDA context, cuBLAS workspace, latents, scheduler state: outside max_memory_allocated on the
# device but inside the card. Subtracted from free memory, not added to the predicted peak.
CONTEXT_BYTES = int(0.6 * GIB)

# --- time model -------------------------------------------------------------------------------
# Share of the bf16 matmul peak a step reaches (H200, 24 GiB cap, bench/e2e.py, 2026-11-26):
# compiled bf16 blocks, what the worker runs where compile pays: TI2V-5B 720p 73.4 %, T2V-A14B 720p
# 74.7 % and 480p 73.8 % (both under block offload); eager (fp8 or 8-bit storage, speech to video,
# no Triton): T2V-A14B 480p fp8 64.2 %, 720p 66 %.
MFU_COMPILED = 0.735
MFU_EAGER = 0.64
# Transformer placements where compiling the blocks was measured to pay (bf16 weights); the worker
# compiles exactly there (engine.accel.apply_speed).
COMPILE_OFFLOADS = frozenset({"resident", "model_offload", "group_offload"})
# Block offload prefetches the next block while one computes, so a step pays only the transfer that
# compute does not hide, plus this share of the whole transfer: the first 4 blocks of an A14B
# expert at 720p ran 2.279 s streamed against 2.263 s resident (bench/step_profile.py), 7 % of
# their transfer time at 50 GB/s.
GROUP_TRANSFER_EXPOSED = 0.07
SEQUENTIAL_LINK_FACTOR = 0.25  # leaf-level, unpinned, synchronous copies
# Model offload moves each component on once per job from pinned host copies (moving off is free):
# TI2V-5B's 11.4 GB text encoder came on in ~0.3 s on an H200 (bench/e2e.py), ~0.8 of the link.
MODEL_OFFLOAD_LINK_FACTOR = 0.8
FP8_COMPUTE_FACTOR = 1.01      # T2V-A14B 480p: 6.59 s vs 6.55 s per step
INT8_COMPUTE_FACTOR = 2.0      # bitsandbytes LLM.int8 matmuls are roughly half speed
# GGUF weights are dequantised layer by layer before each matmul (diffusers' GGUFLinear). NOT
# measured yet (an assumption, to be fitted with bench/run_plan.py): it only ranks GGUF below the
# bf16 and fp8 plans that fit, which the quality weight does anyway.
GGUF_COMPUTE_FACTOR = 1.15
CPU_TFLOPS = 0.5               # a desktop CPU in bf16, for the no-GPU and text-on-CPU cases
HOST_OVERHEAD_BYTES = 3 * GIB  # Python, torch, Gradio, CUDA host allocations

# --- the phases of a job, beside the denoising steps -----------------------------------------
# Fitted on an H200 (24 GiB cap) through the product's queue and worker (bench/size_menu.py and
# bench/e2e.py, 2026-12-02, docs/BENCHMARKS.md "Size menu"); the CPU figures on the demo model
# (python bench/cpu_profile.py, same date, a 2-core build machine).
REF_TFLOPS = 790.0             # the H200's measured 8192³ bf16 matmul peak the GPU rates refer to
# Loading a model into a worker: read from disk (page cache) and copy into pinned host memory for
# the offloaded parts. Torch's default page-locking (cudaHostAlloc, one thread) ran at 1.38 GB/s
# (TI2V-5B from its folder: 22.1 s for 24.2 GB, model offload; T2V-A14B built in memory: 49.5 s for
# 68.3 GB). GPU workers now fault the pages in on several threads and register them
# (cluster/devices.worker_environment): T2V-A14B from its folder through the worker, 69.0 GB, 26.7 s
# (2026-12-02, bench/run_size_menu.sh t2v-a14b-disk) → 5.1 GB/s to pin beside 5.2 GB/s to read;
# S2V-14B's 45.7 GB then predicts 17.7 s against 17.3 s measured the same day (19.1 s a run before).
# A worker whose page-locking is left single-threaded (a user's own ``pinned_*`` allocator setting,
# or a machine of under 4 cores) is slower than predicted; bench/e2e.py, which pins in its own
# process with torch's defaults, is compared at that rate (bench/fit_table.py).
LOAD_READ_BYTES_PER_S = 5.2e9
PIN_BYTES_PER_S = 5.1e9
SINGLE_THREAD_PIN_BYTES_PER_S = 1.38e9
# Compiling the blocks (regional torch.compile), paid in the first step of the first job a worker
# runs with a model: TI2V-5B 13.1 / 14.1 / 14.9 s (720p, 1080p, 720p from an image); T2V-A14B
# 11.7 s (e2e, 2026-11-26) and 10.3 s (from disk through the worker, 2026-12-02) for the first
# expert (``Architecture.compile_first_s``: 11.0 s), and 1.5 s more at the swap to the second.
COMPILE_FIRST_S = 13.5
A14B_COMPILE_FIRST_S = 11.0
COMPILE_MORE_EXPERT_S = 1.5
# A warm worker's compiled blocks recompile when a job brings a shape dynamo has not traced yet
# (``engine.compile_log``: a second size, or the first job with the other timestep kind). Measured
# as the first step beyond a step and the text encoding, TI2V-5B, model offload, H200 (bench/
# size_menu.py, 2026-12-02): 720p 10 s after 720p 5 s 6.21 s, 1080p 5 s from an image after 1080p
# 5 s 3.95 s, portrait 720p 5 s after 720p 5 s from an image 5.03 s (mean 5.06 s); not measured
# for A14B's two experts (counted once).
RECOMPILE_NEW_SHAPE_S = 4.9
# A cold worker compiles the block on a throwaway while the weights load (``engine.warmup``): the
# first job then waits for the longer of the two, and its first step still runs this much over a
# step (TI2V-5B 720p, H200: 3.23 − 2.23 s on 2026-12-02, 3.49 − 2.24 s on 2026-12-03).
WARMUP_FIRST_STEP_S = 1.2
DEMO_BUILD_S = 0.1             # a worker builds the demo model in code: 0.06-0.08 s (load_s of a first demo job)
FIRST_CALL_S = 1.0             # an eager first job: kernel selection, cuBLAS/cuDNN set-up (not measured)
# VAE decode on the reference GPU, fp32, tiled: (fixed seconds, seconds per megapixel-frame).
# TI2V-5B's Wan2.2 VAE: 14.3-15.9 s at 720p 5 s (109 Mpx), 29.7 at 720p 10 s, 36.4-37.6 at 1080p
# 5 s, 69.6-71.2 at 1080p 10 s (503 Mpx): 7.1 Mpx/s, no fixed part. A14B's Wan2.1 VAE: 7.84 s at
# 832×480×81 (32 Mpx, 2026-12-02) and 13.59 s at 1280×720×81 (75 Mpx, 2026-11-26). Other GPUs
# scale with their bf16 throughput.
DECODE_S_REF = {"wan2.2": (0.0, 1 / 7.1), "wan2.1": (3.45, 0.136)}
TEXT_MFU = 0.5                 # UMT5 over 512 tokens (a small share of a job; 0.34-0.37 s warm on an H200)


@dataclass(frozen=True)
class DeviceProfile:
    """What a job costs on one kind of device besides its FLOPs: per-op dispatch, the mp4 write on
    the host beside it, fixed text costs (tokenizer), and the demo VAE's decode rate."""

    name: str
    op_overhead_s: float        # one eager op's dispatch (Python, dispatcher, launch)
    ops_overlap: bool           # GPU: launches run ahead of the device, so only the larger counts
    text_fixed_s: float         # tokenizing two prompts, moving the embeddings
    write_fixed_s: float        # starting the encoder, the container
    write_s_per_mpx: float      # H.264 encode, per megapixel-frame
    demo_decode_s_per_mpx: float  # the demo's tiny VAE, per megapixel-frame


# The H200 machine (16 cores), the mp4 written and then its settings tag added (a stream copy):
# 3.0-4.3 s at 720p 5 s (109 Mpx, bench/run_first_video.sh), 13.7-14.6 s at 1080p 10 s (503 Mpx,
# "1080p 10 s, image"), 2026-12-02. Before the settings tag: 3.2-3.5 s and 11.1-11.5 s.
GPU_PROFILE = DeviceProfile("gpu", op_overhead_s=10e-6, ops_overlap=True, text_fixed_s=0.03,
                            write_fixed_s=0.70, write_s_per_mpx=0.0266, demo_decode_s_per_mpx=0.05)
# A CPU (the 2-core build machine, demo model at its sizes): a demo forward is 1,105 ops, 25 ms;
# decode 3.1 s at 256×256×17, 10.2 s at 512×512×17; mp4 write 0.25-0.42 s and 0.84 s.
CPU_PROFILE = DeviceProfile("cpu", op_overhead_s=12.7e-6, ops_overlap=False, text_fixed_s=0.15,
                            write_fixed_s=0.2, write_s_per_mpx=0.14, demo_decode_s_per_mpx=2.55)
# Eager ops of one demo transformer forward and one demo VAE decode (torch.profiler event counts);
# per layer of a full model the same ops over bigger tensors.
OPS_PER_FORWARD_FIXED = 305
OPS_PER_LAYER = 400
DEMO_DECODE_OPS = 8600
# Matmuls over narrow tensors use a CPU poorly: the demo (width 32) reaches ~9 GFLOP/s, 1/50 of a
# wide one. The CPU's efficiency is taken to grow with the width up to this one.
CPU_FULL_WIDTH = 2048


def ops_per_forward(spec: ModelSpec) -> int:
    """Eager ops of one transformer forward."""
    return OPS_PER_FORWARD_FIXED + OPS_PER_LAYER * arch(spec).layers


def cpu_efficiency(spec: ModelSpec) -> float:
    """Share of ``CPU_TFLOPS`` a transformer's matmuls reach on a CPU (narrow ones far less)."""
    return min(1.0, arch(spec).dim / CPU_FULL_WIDTH)


def mpx(width: int, height: int, frames: int) -> float:
    """Megapixel-frames of a video."""
    return width * height * frames / 1e6


def decode_s(spec: ModelSpec, width: int, height: int, frames: int, profile: DeviceProfile,
             tflops: float | None) -> float:
    """Seconds of the VAE decode on a device of ``profile`` (``tflops``: a GPU's bf16 rate)."""
    m = mpx(width, height, frames)
    ops = DEMO_DECODE_OPS * profile.op_overhead_s if spec.is_demo else 0.0
    if spec.is_demo:
        compute = m * profile.demo_decode_s_per_mpx
    else:
        fixed, per_mpx = DECODE_S_REF[spec.vae]
        ref = fixed + m * per_mpx
        compute = ref * (REF_TFLOPS / tflops if tflops else REF_TFLOPS / CPU_TFLOPS)
    return max(ops, compute) if profile.ops_overlap else ops + compute


def s2v_decodes_s(spec: ModelSpec, width: int, height: int, chunk_frames: int, profile: DeviceProfile,
                  tflops: float | None) -> tuple[float, float]:
    """(first chunk, each later chunk) VAE seconds of a speech-to-video job. Every chunk's latents
    are decoded with what leads them: the first with the reference frame (a chunk of 80 frames
    decodes 81), a later one with its motion latents (153); before each later chunk the motion
    frames are encoded (``engine.s2v.pipeline``)."""
    latents = chunk_frames // 4
    motion = (S2V_MOTION_FRAMES + 3) // 4
    first = decode_s(spec, width, height, latents * 4 + 1, profile, tflops)
    later = decode_s(spec, width, height, (motion + latents - 1) * 4 + 1, profile, tflops)
    encode = S2V_ENCODE_OVER_DECODE * decode_s(spec, width, height, S2V_MOTION_FRAMES, profile, tflops)
    return first, later + encode


def condition_s(spec: ModelSpec, width: int, height: int, frames: int, profile: DeviceProfile,
                tflops: float | None) -> float:
    """Seconds of the VAE encode of an image-to-video job's condition video (0 for other tasks)."""
    if spec.task != "i2v" or spec.is_demo:
        return 0.0
    return I2V_CONDITION_OVER_DECODE * decode_s(spec, width, height, frames, profile, tflops)


def write_s(width: int, height: int, frames: int, profile: DeviceProfile) -> float:
    """Seconds to encode and write the mp4 on the host."""
    return profile.write_fixed_s + mpx(width, height, frames) * profile.write_s_per_mpx


@dataclass(frozen=True)
class Architecture:
    """What sizes a transformer's activations and FLOPs. Lengths in latent tokens."""

    dim: int
    ffn: int
    layers: int
    spatial_down: int          # pixels per token side: VAE factor × patch 2
    expand_timesteps: bool
    nonblock_params: int       # embedders, head: stay bf16 under fp8 storage, always on the GPU
    text_len: int = 512
    act_bytes_per_token_dim: float = ACT_BYTES_PER_TOKEN_DIM
    # Speech to video: every forward also attends over the reference image and the frame-pack
    # motion context (``engine.s2v.transformer``), and this many blocks add an audio cross-attention.
    frame_pack: bool = False
    audio_inject_layers: int = 0
    compile_first_s: float = COMPILE_FIRST_S  # its blocks' first compile in a worker (see the constant)
    # Of ``nonblock_params``, those in ``nn.Sequential`` children: diffusers' block offload streams
    # them like blocks instead of keeping them on the GPU (S2V's text, time embeddings and time
    # projection; a Diffusers model has none).
    streamed_nonblock_params: int = 0
    # Share of the bf16 peak its eager steps reach, and an eager first job's one-off set-up.
    mfu_eager: float = MFU_EAGER
    first_call_s: float = FIRST_CALL_S


ARCHITECTURES: dict[str, Architecture] = {
    "ti2v-5b": Architecture(3072, 14336, 30, 32, True, 90_000_000,
                            act_bytes_per_token_dim=TI2V_ACT_BYTES_PER_TOKEN_DIM),
    "t2v-a14b": Architecture(5120, 13824, 40, 16, False, 232_000_000, compile_first_s=A14B_COMPILE_FIRST_S),
    "i2v-a14b": Architecture(5120, 13824, 40, 16, False, 232_000_000, compile_first_s=A14B_COMPILE_FIRST_S),
    # S2V: 16.30 B parameters, 14.06 B in its 40 blocks; the audio injector alone is 1.89 B outside them
    # S2V's eager step fitted over its four H200 rows (24 GiB cap, layers around the blocks kept on
    # the GPU): through the worker (2026-12-02) 6.74 s a step inside a chunk at 832×448 (a 832×480
    # budget framed to the portrait) and 17.40 s at 1024×704, seen at the table's 750 TFLOP/s;
    # bench/s2v_step.py (2026-11-26) 7.63 and 18.08 s at 797 TFLOP/s. 0.69 puts all four within
    # 9 %; MFU_EAGER (0.64) predicted the worker's steps 8-18 % slow. Its cold job's first step took
    # 4.1 s beyond a step, 0.35 s of it text.
    "s2v-14b": Architecture(5120, 13824, 40, 16, False, 2_240_000_000, frame_pack=True, audio_inject_layers=12,
                            streamed_nonblock_params=232_048_640, mfu_eager=0.69, first_call_s=3.7),
    "demo": Architecture(32, 64, 2, 32, True, 10_000),
    "demo-s2v": Architecture(32, 64, 2, 16, False, 10_000, frame_pack=True, audio_inject_layers=2),
}


def arch(spec: ModelSpec) -> Architecture:
    """The architecture of ``spec``; unknown models are an error (the planner cannot guess)."""
    try:
        # "t2v-a14b@high": one expert of a model held by a cluster worker has the model's shapes.
        return ARCHITECTURES[spec.key.partition("@")[0]]
    except KeyError:
        raise KeyError(f"no memory model for '{spec.key}'; add it to costs.ARCHITECTURES") from None


def tokens(spec: ModelSpec, width: int, height: int, frames: int) -> int:
    """Latent tokens of one forward: latent frames × (H/down) × (W/down)."""
    a = arch(spec)
    return ((frames - 1) // 4 + 1) * (height // a.spatial_down) * (width // a.spatial_down)


# Frame-pack motion context of speech to video (``engine.s2v.motion``, the official
# ``FramePackMotioner``): the 19 motion latents in buckets of (latent frames, merge factor), newest
# first; a bucket of ``frames`` merged ``k``× in time and space gives frames/k × (h/2k) × (w/2k)
# tokens of the latent h × w (the patch is 2 × 2 before the merge).
S2V_MOTION_BUCKETS = ((1, 1), (2, 2), (16, 4))
S2V_REFERENCE_FRAMES = 1       # the portrait, one latent frame at full token resolution
# Audio tokens per latent frame an injector's cross-attention reads: 4 local + 1 padding token.
S2V_AUDIO_TOKENS_PER_FRAME = 5
# The pixel frames a chunk after the first carries as its motion context (the official 73), and
# the seconds of a VAE encode over the seconds of a decode of as many frames: the gap between two
# chunks (the first one's decode, then the motion frames' encode) took 10.7 s at 832×448 and 17.2
# s at 1024×704 on the H200 (2026-12-02), 0.67 × the decode each time once the decode is counted.
S2V_MOTION_FRAMES = 73
S2V_ENCODE_OVER_DECODE = 0.67
# Image to video (I2V-A14B) encodes its condition video, the image followed by frames - 1 blank
# frames, with the VAE before its first step, as the official sampler does. Fitted on the first
# steps of the three I2V-A14B jobs from disk (2026-12-03, H200, 24 GiB cap, 832×480×81 cold and
# warm, 1280×720×81 at a new size: 3.7-10.6 s beyond a step): 0.47 × the decode of as many frames.
I2V_CONDITION_OVER_DECODE = 0.47
# The phases every job runs, warm or cold (``memory.estimate.phase_times``).
JOB_PHASES = ("text_s", "condition_s", "steps_s", "decode_s", "write_s")


def context_tokens(spec: ModelSpec, width: int, height: int) -> int:
    """Tokens a forward attends over beside the noisy video: S2V's reference image and motion
    context (a chunk after the first; the first has no motion yet, ~6 % fewer tokens), else 0."""
    a = arch(spec)
    if not a.frame_pack:
        return 0
    lh, lw = height // (a.spatial_down // 2), width // (a.spatial_down // 2)  # latent (VAE ×8)
    reference = S2V_REFERENCE_FRAMES * (height // a.spatial_down) * (width // a.spatial_down)
    motion = sum(f // k * (lh // (2 * k)) * (lw // (2 * k)) for f, k in S2V_MOTION_BUCKETS)
    return reference + motion


def attended_tokens(spec: ModelSpec, width: int, height: int, frames: int) -> int:
    """Tokens in one forward's self-attention: the noisy video's and any context's."""
    return tokens(spec, width, height, frames) + context_tokens(spec, width, height)


def activation_bytes(spec: ModelSpec, n_tokens: int, image: bool = True) -> int:
    """Peak transient bytes of one transformer forward over ``n_tokens`` tokens (calibrated);
    ``image``: the job starts from an image, so a TI2V model needs a timestep per token."""
    a = arch(spec)
    per = a.act_bytes_per_token_dim + (TIMESTEP_BYTES_PER_TOKEN_DIM if a.expand_timesteps and image else 0.0)
    return int(n_tokens * a.dim * per)


def compiles(spec: ModelSpec, storage: str, offload: str) -> bool:
    """Whether the worker compiles a transformer placed so (``engine.accel.apply_speed``, compile
    ``auto``): bf16 weights, a placement where it pays, a diffusers model with named blocks, Triton."""
    return storage == "bf16" and offload in COMPILE_OFFLOADS and spec.task != "s2v" and triton_installed()


@functools.cache
def triton_installed() -> bool:
    """torch.compile's GPU code generator is importable here."""
    return importlib.util.find_spec("triton") is not None


def flops_per_forward(spec: ModelSpec, n_tokens: int) -> float:
    """FLOPs of one transformer forward (linear layers, attention, cross-attention, FFN)."""
    a = arch(spec)
    n, d, t = n_tokens, a.dim, a.text_len
    per_layer = (8 * n * d * d          # self-attention q, k, v, o
                 + 4 * n * n * d        # scores and values
                 + 4 * n * d * d        # cross-attention q, o
                 + 4 * t * d * d        # cross-attention k, v over the text
                 + 4 * n * t * d        # cross-attention scores and values
                 + 4 * n * d * a.ffn)   # feed-forward
    return float(per_layer * a.layers)


def audio_inject_flops(spec: ModelSpec, video_tokens: int, latent_frames: int) -> float:
    """FLOPs of S2V's audio injectors in one forward: each projects the video tokens' queries and
    outputs and attends, frame by frame, over that frame's audio tokens (0 for other models)."""
    a = arch(spec)
    audio = latent_frames * S2V_AUDIO_TOKENS_PER_FRAME
    per_layer = (4 * video_tokens * a.dim * a.dim                     # q, o over the video tokens
                 + 4 * audio * a.dim * a.dim                          # k, v over the audio tokens
                 + 4 * video_tokens * S2V_AUDIO_TOKENS_PER_FRAME * a.dim  # scores and values
                 + 4 * latent_frames * a.dim * a.dim)                 # adaptive norm from the global token
    return float(per_layer * a.audio_inject_layers)


def forward_flops(spec: ModelSpec, width: int, height: int, frames: int) -> float:
    """FLOPs of one transformer forward of a job at ``width``×``height``×``frames``: the blocks over
    every attended token (S2V's reference and motion context too) and S2V's audio injectors.
    Counting only the noisy video, the S2V step at 832×480 and 1024×704 was predicted 19 % and 13 %
    fast (6.20 and 15.71 s against 7.63 and 18.08 s measured, bench/s2v_step.py --recipe group,
    2026-11-26); with the context and injectors, 7.55 and 19.37 s (-1 %, +7 %)."""
    n_video = tokens(spec, width, height, frames)
    latent_frames = (frames - 1) // 4 + 1
    return (flops_per_forward(spec, n_video + context_tokens(spec, width, height))
            + audio_inject_flops(spec, n_video, latent_frames))


def stored_bytes(params: int, storage: str, nonblock_params: int = 0) -> int:
    """Bytes of ``params`` weights held as ``storage``; layers that fp8/int8 skip stay bf16."""
    if storage == "fp32":
        return params * 4
    if storage == "bf16":
        return params * 2
    # fp8 layerwise storage skips embedders and norms; bitsandbytes keeps them in bf16 as well,
    # and adds one fp32 scale per output row (small, folded into the 2 % below).
    body = (params - nonblock_params) * (1.02 if storage == "int8" else 1.0)
    return int(body + nonblock_params * 2)


def component_bytes(c: ComponentSpec, storage: str, nonblock_params: int = 0) -> int:
    """Bytes of component ``c`` held as ``storage``: a GGUF file's own tensor bytes (read from its
    header by ``catalog.formats``), else ``stored_bytes`` of its parameter count."""
    if storage == "gguf":
        return c.gguf_bytes
    return stored_bytes(c.params, storage, nonblock_params)


def block_bytes(spec: ModelSpec, params: int, storage: str) -> int:
    """Bytes of one transformer block at ``storage``."""
    a = arch(spec)
    return int(stored_bytes(params - a.nonblock_params, storage) / a.layers)


def decode_bytes(spec: ModelSpec, width: int, height: int, frames: int) -> int:
    """GPU working memory of a tiled VAE decode: one tile's layers and feature cache. The decoded
    pieces go to host memory as they come (``engine.decode``), so the video's size does not count."""
    if spec.is_demo:  # tiny VAE, no tiling
        return 2 * frames * 3 * height * width * 4
    return TILED_DECODE_WORK_BYTES[spec.vae]


def decode_host_bytes(width: int, height: int, frames: int) -> int:
    """Host bytes the decode assembles the fp32 video in, at its peak: the decoded tiles, their
    blended result and its un-patched copy, ≈ 3.7 times the video (diffusers' tiled decode)."""
    return int(DECODE_HOST_VIDEOS * frames * 3 * height * width * 4)
