"""Shape settings of the speech-to-video transformer, full size and tiny.

The full-size numbers are those of the released Wan2.2-S2V-14B (``config.json`` of
``Wan-AI/Wan2.2-S2V-14B`` and the official ``wan/configs/wan_s2v_14B.py``). Only the settings that
change shapes or the computation are kept; switches of the released model that are fixed
(adaptive audio norm on, frame-pack motion on, zero timestep for reference/motion tokens) are
always on here rather than options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Latent frames the frame-pack motion module keeps, nearest first: 1 at full resolution, 2 at half,
# 16 at quarter. Their sum (19) is the number of motion latents the model sees.
ZIP_FRAME_BUCKETS = (1, 2, 16)


@dataclass(frozen=True)
class S2VConfig:
    """Architecture of one speech-to-video transformer. Sizes are channels unless named otherwise."""

    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 16
    out_dim: int = 16
    cond_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    audio_dim: int = 1024
    audio_layers: int = 25
    num_audio_token: int = 4
    audio_inject_layers: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
    motion_frames: int = 73

    def __post_init__(self) -> None:
        head_dim = self.dim // self.num_heads
        if self.dim % self.num_heads or head_dim % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size")
        bad = [i for i in self.audio_inject_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"audio inject layers {bad} are outside 0..{self.num_layers - 1}")
        if self.dim % 4:
            raise ValueError("dim must be a multiple of 4 (the audio encoder works at dim/4)")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.dim // self.num_heads

    @property
    def motion_latent_frames(self) -> int:
        """Latent frames of the motion context (73 video frames -> 19 latents)."""
        return (self.motion_frames + 3) // 4

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_official(cls, data: dict[str, Any]) -> S2VConfig:
        """Read the ``config.json`` shipped with the official checkpoint.

        Refuses a checkpoint whose switches differ from what this implementation computes, naming
        the switch, rather than loading weights into the wrong graph.
        """
        required = {"enable_adain": True, "enable_framepack": True, "enable_motioner": False,
                    "zero_timestep": True, "adain_mode": "attn_norm"}
        for key, want in required.items():
            if key in data and data[key] != want:
                raise ValueError(f"unsupported speech-to-video checkpoint: {key}={data[key]!r} (expected {want!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: data[k] for k in names if k in data}
        if "patch_size" in kwargs:
            kwargs["patch_size"] = tuple(kwargs["patch_size"])
        if "audio_inject_layers" in kwargs:
            kwargs["audio_inject_layers"] = tuple(kwargs["audio_inject_layers"])
        return cls(**kwargs)


FULL_14B = S2VConfig()

# Tiny: the real graph at toy width, for CPU tests. ``audio_dim``/``audio_layers`` match the tiny
# wav2vec2 built in ``tiny.py`` (hidden 32, 2 layers + embeddings = 3 hidden states).
TINY = S2VConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=32, text_len=64, freq_dim=32,
                 audio_dim=32, audio_layers=3, audio_inject_layers=(0, 2))


def count_params(config: S2VConfig) -> int:
    """Parameters of the transformer with ``config``, computed without building it."""
    import torch

    from wan_studio.engine.s2v.transformer import S2VTransformer

    with torch.device("meta"):
        model = S2VTransformer(config)
    return sum(p.numel() for p in model.parameters())
