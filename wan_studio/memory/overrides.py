"""User overrides of the automatic memory plan (the Advanced tab): pin a knob, the planner does the rest.

Each field left ``None`` stays automatic. The planner keeps only the candidate plans that match
every pinned knob and still picks the fastest of them that fits; when none fits, the error names
the override and what it would need, so the user knows which pin to loosen.

``attention``, ``compile`` and ``decode`` are not memory knobs: the planner carries them through
unchanged and the job runner applies them to the pipeline (``wan_studio.engine.accel``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from wan_studio.memory.plan import NoPlanFits, Offload, Plan, Storage

TextEncoderPlace = Literal["gpu", "cpu", "second_gpu"]
AttentionName = Literal["cudnn", "flash", "flash3", "sage", "xformers", "sdpa"]
DecodeName = Literal["fp32", "bf16"]

# What the user may pick, with the words the UI shows.
STORAGE_CHOICES: dict[str, str] = {"bf16": "bf16 (full quality)", "fp8": "fp8 storage (slight detail loss)",
                                   "int8": "8-bit bitsandbytes (slower, slight loss)",
                                   "gguf": "GGUF file as on disk (a ComfyUI folder's .gguf)", "fp32": "fp32 (demo model)"}
OFFLOAD_CHOICES: dict[str, str] = {"resident": "everything on the GPU", "model_offload": "model offload",
                                   "group_offload": "block offload with prefetch",
                                   "sequential": "sequential offload (slowest, least VRAM)",
                                   "balanced": "split across two GPUs", "cpu": "CPU only"}
TEXT_ENCODER_CHOICES: dict[str, str] = {"gpu": "on the transformer's GPU", "cpu": "on the CPU",
                                        "second_gpu": "on the second GPU"}


class OverrideError(NoPlanFits):
    """An override that is malformed or that no plan can satisfy; the message is for the user."""


@dataclass(frozen=True)
class PlanOverrides:
    """Knobs pinned by the user; ``None`` = automatic.

    ``storage``: transformer weight storage; ``offload``: how the transformer reaches the GPU;
    ``text_encoder``: where UMT5 runs; ``gpu``: the device the transformer (first expert) runs on,
    e.g. ``cuda:1``; ``attention``: attention kernel; ``compile``: torch.compile the blocks;
    ``decode``: VAE decode precision (fp32 by default; bf16 is faster, slightly different pixels).
    """

    storage: Storage | None = None
    offload: Offload | None = None
    text_encoder: TextEncoderPlace | None = None
    gpu: str | None = None
    attention: AttentionName | None = None
    compile: bool | None = None
    decode: DecodeName | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PlanOverrides:
        """From a request's ``overrides`` dict; empty strings and ``"auto"`` mean automatic."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise OverrideError(f"overrides must be a mapping of knob → value, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OverrideError(f"unknown plan override(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        clean = {k: (None if v in ("", "auto") else v) for k, v in data.items()}
        allowed = {"storage": get_args(Storage), "offload": get_args(Offload),
                   "text_encoder": get_args(TextEncoderPlace), "attention": get_args(AttentionName),
                   "decode": get_args(DecodeName)}
        for key, options in allowed.items():
            if clean.get(key) is not None and clean[key] not in options:
                raise OverrideError(f"{key} override {clean[key]!r} is not one of {', '.join(options)}")
        gpu = clean.get("gpu")
        if gpu is not None and (not isinstance(gpu, str) or not (gpu == "cpu" or gpu.startswith("cuda:"))):
            raise OverrideError(f"gpu override must be 'cpu' or 'cuda:N', got {gpu!r}")
        if clean.get("compile") is not None and not isinstance(clean["compile"], bool):
            raise OverrideError(f"compile override must be true or false, got {clean['compile']!r}")
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        """Only the pinned knobs, for the sidecar."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def pins_memory(self) -> bool:
        """Whether any knob the planner decides is pinned."""
        return any(v is not None for v in (self.storage, self.offload, self.text_encoder, self.gpu))

    def matches(self, plan: Plan) -> bool:
        """Whether ``plan`` honours every pinned memory knob."""
        main = plan.placement("transformer")
        if main is None:
            return True
        if self.storage is not None and main.storage != self.storage:
            return False
        if self.offload is not None and main.offload != self.offload:
            return False
        if self.gpu is not None and main.devices[0] != self.gpu:
            return False
        te = plan.placement("text_encoder")
        if self.text_encoder is not None and te is not None:
            if self.text_encoder == "cpu" and te.device != "cpu":
                return False
            if self.text_encoder == "gpu" and te.device not in main.devices:
                return False
            if self.text_encoder == "second_gpu" and (te.device == "cpu" or te.device in main.devices
                                                       and len(main.devices) == 1):
                return False
        return True

    def describe(self) -> str:
        """``storage fp8, offload resident`` for messages."""
        return ", ".join(f"{k} {v}" for k, v in self.to_dict().items() if k in ("storage", "offload", "text_encoder", "gpu"))



def overrides_of(request: Any) -> PlanOverrides:
    """The overrides of a ``GenerationRequest`` (duck-typed: memory does not import the engine)."""
    return PlanOverrides.from_dict(getattr(request, "overrides", None))
