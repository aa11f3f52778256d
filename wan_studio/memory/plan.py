"""Records the planner produces and the manager applies: ``Placement``, ``Plan``, ``Workload``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

GIB = 2**30

Storage = Literal["bf16", "fp8", "int8", "fp32", "gguf"]
Offload = Literal["resident", "model_offload", "group_offload", "sequential", "balanced", "cpu"]

TRANSFORMERS = ("transformer", "transformer_2")

QUALITY_NOTE: dict[str, str] = {
    "bf16": "full quality (bf16 weights)",
    "fp32": "full quality",
    "fp8": "fp8 weight storage, bf16 compute: a slight loss of fine detail",
    "int8": "8-bit weights (bitsandbytes LLM.int8): a slight loss of detail, slower",
    "gguf": "GGUF quantised weights: a loss of detail that grows from Q8 to Q4",
}


@dataclass(frozen=True)
class Placement:
    """Where one component lives and how it reaches the GPU.

    ``device`` is ``cuda:N``, ``cpu``, or ``cuda:0,cuda:1`` for a model split across both GPUs.
    """

    component: str
    device: str
    storage: Storage
    offload: Offload

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device this component computes on."""
        return tuple(self.device.split(","))


@dataclass(frozen=True)
class Workload:
    """The size of one job: pixels, frames, denoising steps, and how many steps CFG doubles."""

    width: int
    height: int
    frames: int
    steps: int
    cfg: bool = True
    # The job starts from an image (or continues from frames, as every long-clip window after the
    # first does); a TI2V model then needs a timestep per token, which costs memory.
    image: bool = True
    # Steps that run the unconditional pass too (None: every step when ``cfg``); a distilled job's
    # motion phase guides only its first steps.
    guided_steps: int | None = None
    # Speech to video makes its clip in chunks of ``frames``, each denoised for ``steps`` and decoded.
    chunks: int = 1
    # Frames the mp4 holds, when not ``frames × chunks`` (speech to video: as long as the speech).
    video_frames: int = 0

    @classmethod
    def from_request(cls, request: Any) -> Workload:
        """From a resolved ``GenerationRequest`` (duck-typed: memory does not import the engine).

        CFG follows diffusers' Wan loop: it runs the unconditional pass on every step when the
        (high-noise) ``guidance`` is above 1, and on none otherwise, whatever ``guidance_2`` says.
        A fast job's motion phase guides its first ``motion_steps`` steps only.
        """
        motion = getattr(request, "motion_steps", None) or 0
        guided = motion if motion else (request.steps if (request.guidance or 0) > 1 else 0)
        image = getattr(request, "image", None) is not None or getattr(request, "total_frames", None) is not None
        chunks = max(1, int(getattr(request, "speech_chunks", 1) or 1))
        width, height, video = request.width, request.height, 0
        speech = getattr(request, "speech_video", None)
        if speech is not None:  # framed to the portrait, as long as the speech
            width, height, video = speech
        return cls(width, height, request.num_frames, request.steps, guided > 0, image, guided, chunks, video)

    @property
    def written_frames(self) -> int:
        """Frames of the mp4 the job writes."""
        return self.video_frames or self.frames * self.chunks

    @property
    def total_steps(self) -> int:
        """Denoising steps of the whole job: ``steps`` for each chunk."""
        return self.steps * self.chunks

    @property
    def passes_per_step(self) -> float:
        """Transformer forwards per denoising step, averaged over the job (1 to 2)."""
        if not self.cfg or self.steps <= 0:
            return 1.0
        guided = self.steps if self.guided_steps is None else min(self.guided_steps, self.steps)
        return 1.0 + guided / self.steps

    def describe(self) -> str:
        """``832×480×81``."""
        return f"{self.width}×{self.height}×{self.frames}"


@dataclass(frozen=True)
class Limits:
    """What the user allows and how much safety margin the planner keeps.

    ``headroom`` is the fraction of free VRAM left unused for allocator fragmentation;
    ``host_fraction`` the share of host RAM the app may fill.
    """

    allow_fp8: bool = True
    allow_8bit: bool = False
    headroom: float = 0.08
    host_fraction: float = 0.85


@dataclass(frozen=True)
class Plan:
    """How to run one model for one workload on this machine, with its predicted cost.

    Memory in bytes, times in seconds; ``relative_speed`` is predicted job time with everything
    resident in bf16 divided by this plan's (1.0 = no offload cost).
    """

    model: str
    label: str
    placements: tuple[Placement, ...]
    vae_tiling: bool
    peak_vram: tuple[tuple[str, int], ...]
    host_ram_bytes: int
    step_s: float
    job_s: float
    relative_speed: float
    why: str = ""
    # VAE decode tile (min, stride) in pixels when ``vae_tiling``; the planner picks the bigger,
    # faster tile when the decode phase fits with it.
    vae_tile: tuple[int, int] = (256, 192)
    # Predicted seconds per phase of a job (``estimate.Estimate.phases``): load_s, compile_s,
    # recompile_s, text_s, steps_s, decode_s, write_s; compile_hidden_s where a cold worker compiles
    # beside the load (the part of compile_s the load hides).
    phases: tuple[tuple[str, float], ...] = ()

    @property
    def phase_s(self) -> dict[str, float]:
        """The predicted phases as a dict (empty for a plan made without them)."""
        return dict(self.phases)

    @property
    def warm_job_s(self) -> float:
        """Predicted job on a worker that holds the model compiled: text, the condition video's
        encode (image to video), steps, decode, mp4
        (the denoising estimate alone for a plan without phases)."""
        ph = self.phase_s
        if not ph:
            return self.job_s
        from wan_studio.memory.costs import JOB_PHASES

        return sum(ph.get(k, 0.0) for k in JOB_PHASES)

    @property
    def cold_job_s(self) -> float:
        """Predicted first job of a fresh worker: loading the model and compiling as well (the
        compile partly beside the load where the worker warms it up then: ``compile_hidden_s``)."""
        return self.warm_job_s + self.cold_extra_s

    @property
    def cold_extra_s(self) -> float:
        """What a fresh worker adds to a job (``cold_extra_of``)."""
        return cold_extra_of(self.phase_s)

    def compile_s_for(self, needs: list[str] | tuple[str, ...]) -> float:
        """Predicted compile seconds of a job whose shapes need ``needs`` (see ``compile_s_of``)."""
        return compile_s_of(self.phase_s, needs)

    def placement(self, component: str) -> Placement | None:
        """The placement of ``component``, or None when the model has no such part."""
        return next((p for p in self.placements if p.component == component), None)

    @property
    def storage(self) -> Storage:
        """Storage of the transformer(s), which decides the quality cost."""
        p = self.placement("transformer")
        return p.storage if p else "bf16"

    @property
    def quality(self) -> str:
        """What the storage choice costs in quality, for the user."""
        return QUALITY_NOTE[self.storage]

    @property
    def devices(self) -> tuple[str, ...]:
        """GPU devices the plan uses, primary first."""
        out: list[str] = []
        for p in self.placements:
            out += [d for d in p.devices if d.startswith("cuda") and d not in out]
        return tuple(out)

    @property
    def primary_device(self) -> str:
        """Where latents live and the VAE decodes: the first transformer's first device."""
        p = self.placement("transformer")
        return p.devices[0] if p else "cpu"

    @property
    def peak_vram_gib(self) -> float:
        """Highest predicted peak over the devices, GiB."""
        return max((b for _, b in self.peak_vram), default=0) / GIB

    @property
    def offload_modes(self) -> set[str]:
        """Offload modes used by any component."""
        return {p.offload for p in self.placements}

    def summary(self) -> str:
        """One line for the UI: label, predicted peak and speed."""
        return (f"{self.label} — predicted peak {self.peak_vram_gib:.1f} GiB VRAM, "
                f"{self.host_ram_bytes / GIB:.0f} GiB RAM, {self.relative_speed:.0%} of full speed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the sidecar."""
        d = asdict(self)
        d["peak_vram_gib"] = {dev: round(b / GIB, 2) for dev, b in self.peak_vram}
        d["host_ram_gib"] = round(self.host_ram_bytes / GIB, 2)
        d["quality"] = self.quality
        d["phases"] = {k: round(v, 3) for k, v in self.phases}
        if self.phases:
            d["warm_job_s"], d["cold_job_s"] = round(self.warm_job_s, 3), round(self.cold_job_s, 3)
        for k in ("peak_vram", "host_ram_bytes"):
            d.pop(k)
        return d


def cold_extra_of(phases: dict[str, float]) -> float:
    """What a fresh worker adds to a job of these ``phases``: loading, and compiling where the load
    does not hide it (``compile_hidden_s``)."""
    return phases.get("load_s", 0.0) + phases.get("compile_s", 0.0) - phases.get("compile_hidden_s", 0.0)


def compile_s_of(phases: dict[str, float], needs: list[str] | tuple[str, ...]) -> float:
    """Predicted compile seconds of a job from a plan's ``phases`` and what each of its shapes
    needs (``engine.compile_log``): "compile" (the model's first run in the worker) counts
    ``compile_s``, "recompile" (a shape its compiled blocks have not traced) ``recompile_s``."""
    per = {"compile": phases.get("compile_s", 0.0), "recompile": phases.get("recompile_s", 0.0)}
    return sum(per.get(n, 0.0) for n in needs)


class NoPlanFits(RuntimeError):
    """No way to run the model on this machine; the message says what is short and by how much."""
