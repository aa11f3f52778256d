"""Model specs for the Wan2.2 family and the built-in demo model.

Defaults follow the official Wan2.2 configs (``wan/configs/`` of Wan-Video/Wan2.2); parameter
counts are computed from the published model configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["ti2v", "t2v", "i2v", "s2v"]
VaeKind = Literal["wan2.1", "wan2.2"]


@dataclass(frozen=True)
class ComponentSpec:
    """One loadable part of a pipeline.

    ``share_key`` names components that are byte-identical across models (the UMT5 encoder is
    the same in all four), so the model manager can hold one copy.
    """

    name: str
    params: int
    dtype: Literal["bf16", "fp32"]
    share_key: str | None = None
    # A GGUF file of this component is on disk (``catalog.formats``): its tensors' bytes once loaded,
    # its quantisation (``Q5_K``), and whether it is the only file (no fp16/bf16/fp8 one beside it).
    gguf_bytes: int = 0
    gguf_quant: str = ""
    gguf_only: bool = False

    @property
    def bytes(self) -> int:
        """Size of the weights in bytes at ``dtype``."""
        return self.params * (4 if self.dtype == "fp32" else 2)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the app knows about one model before loading it.

    Sizes are pixels, lengths are frames, ``fps`` is frames per second.
    """

    key: str
    title: str
    task: Task
    hub_id: str
    folder: str
    pipeline: str
    steps: int
    shift: float
    guidance: float
    guidance_2: float | None
    boundary: float | None
    frames: int
    fps: int
    sizes: tuple[tuple[int, int], ...]
    size_multiple: int
    vae: VaeKind
    components: tuple[ComponentSpec, ...]
    min_side: int = 256
    max_side: int = 1920
    max_pixels: int = 1920 * 1088
    max_frames: int = 241
    accepts_image: bool = True
    requires_image: bool = False
    requires_audio: bool = False
    is_demo: bool = False
    diffusers_layout: bool = True
    notes: str = ""
    negative_prompt: str = field(default="")
    negative_prompt_gloss: str = ""  # English help text for ``negative_prompt``; never sent to the model

    @property
    def default_size(self) -> tuple[int, int]:
        """(width, height) of the first official size."""
        return self.sizes[0]

    @property
    def total_params(self) -> int:
        """Parameters over all components."""
        return sum(c.params for c in self.components)

    @property
    def download_command(self) -> str:
        """Shell command that fetches this model into the default models folder."""
        return f"python app.py --download {self.key}"


# The official default negative prompts (``sample_neg_prompt`` of the Wan2.2 configs), verbatim:
# the models were trained and tuned with these Chinese strings, so a blank field means them. The
# English glosses are shown as help text only; they condition the model differently.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，"
    "整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
NEGATIVE_PROMPT_GLOSS = (
    "garish colours, overexposed, static, blurry details, subtitles, style, artwork, painting, picture, "
    "still, overall greyish, worst quality, low quality, JPEG compression artefacts, ugly, mutilated, extra "
    "fingers, badly drawn hands, badly drawn face, deformed, disfigured, malformed limbs, fused fingers, "
    "motionless frame, cluttered background, three legs, many people in the background, walking backwards"
)

# Speech-to-video has its own (``wan_s2v_14B.py``), aimed at faces and hands.
S2V_NEGATIVE_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
S2V_NEGATIVE_PROMPT_GLOSS = (
    "blurry picture, worst quality, blurry picture, blurry unclear details, violent emotional agitation, "
    "fast shaking hands, subtitles, ugly, mutilated, extra fingers, badly drawn hands, badly drawn face, "
    "deformed, disfigured, malformed limbs, fused fingers, motionless frame, cluttered background, three "
    "legs, many people in the background, walking backwards"
)

_UMT5 = ComponentSpec("text_encoder", 5_680_000_000, "bf16", share_key="umt5-xxl")
_VAE21 = ComponentSpec("vae", 127_000_000, "fp32", share_key="wan2.1-vae")
_VAE22 = ComponentSpec("vae", 705_000_000, "fp32", share_key="wan2.2-vae")
_EXPERT = 14_290_000_000
_S2V_TRANSFORMER = 16_295_755_609

TI2V_5B = ModelSpec(
    key="ti2v-5b",
    title="Wan2.2 TI2V-5B (text/image to video)",
    task="ti2v",
    hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    folder="Wan2.2-TI2V-5B-Diffusers",
    pipeline="WanPipeline",
    steps=50,
    shift=5.0,
    guidance=5.0,
    guidance_2=None,
    boundary=None,
    frames=121,
    fps=24,
    sizes=((1280, 704), (704, 1280)),
    size_multiple=32,
    vae="wan2.2",
    components=(ComponentSpec("transformer", 5_000_000_000, "bf16"), _UMT5, _VAE22),
    max_frames=241,
    negative_prompt=NEGATIVE_PROMPT,
    negative_prompt_gloss=NEGATIVE_PROMPT_GLOSS,
)

T2V_A14B = ModelSpec(
    key="t2v-a14b",
    title="Wan2.2 T2V-A14B (text to video, two experts)",
    task="t2v",
    hub_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
    folder="Wan2.2-T2V-A14B-Diffusers",
    pipeline="WanPipeline",
    steps=40,
    shift=12.0,
    guidance=4.0,
    guidance_2=3.0,
    boundary=0.875,
    frames=81,
    fps=16,
    sizes=((1280, 720), (832, 480), (720, 1280), (480, 832)),
    size_multiple=16,
    vae="wan2.1",
    components=(
        ComponentSpec("transformer", _EXPERT, "bf16"),
        ComponentSpec("transformer_2", _EXPERT, "bf16"),
        _UMT5,
        _VAE21,
    ),
    max_frames=161,
    accepts_image=False,
    negative_prompt=NEGATIVE_PROMPT,
    negative_prompt_gloss=NEGATIVE_PROMPT_GLOSS,
)

I2V_A14B = ModelSpec(
    key="i2v-a14b",
    title="Wan2.2 I2V-A14B (image to video, two experts)",
    task="i2v",
    hub_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
    folder="Wan2.2-I2V-A14B-Diffusers",
    pipeline="WanImageToVideoPipeline",
    steps=40,
    shift=5.0,
    guidance=3.5,
    guidance_2=3.5,
    boundary=0.9,
    frames=81,
    fps=16,
    sizes=((1280, 720), (832, 480), (720, 1280), (480, 832)),
    size_multiple=16,
    vae="wan2.1",
    components=(
        ComponentSpec("transformer", _EXPERT, "bf16"),
        ComponentSpec("transformer_2", _EXPERT, "bf16"),
        _UMT5,
        _VAE21,
    ),
    max_frames=161,
    requires_image=True,
    negative_prompt=NEGATIVE_PROMPT,
    negative_prompt_gloss=NEGATIVE_PROMPT_GLOSS,
)

S2V_14B = ModelSpec(
    key="s2v-14b",
    title="Wan2.2 S2V-14B (speech to video)",
    task="s2v",
    hub_id="Wan-AI/Wan2.2-S2V-14B",
    folder="Wan2.2-S2V-14B",
    pipeline="S2VPipeline",
    steps=40,
    shift=3.0,
    guidance=4.5,
    guidance_2=None,
    boundary=None,
    frames=80,
    fps=16,
    sizes=((1024, 704), (1280, 720), (832, 480), (704, 1024), (720, 1280), (480, 832)),
    size_multiple=16,
    vae="wan2.1",
    components=(
        # 14B backbone + 12 audio cross-attentions with adaptive norms + audio encoder + motion and
        # pose encoders: 16.30 B parameters (1,260 tensors), counted from the released config.
        ComponentSpec("transformer", _S2V_TRANSFORMER, "bf16"),
        _UMT5,
        _VAE21,
        # wav2vec2-large-xlsr-53-english: 24 layers of 1024 (315 M parameters).
        ComponentSpec("audio_encoder", 315_000_000, "fp32"),
    ),
    max_frames=80,
    requires_image=True,
    requires_audio=True,
    diffusers_layout=False,
    notes="Speech-to-video runs through Wan Studio's own pipeline (not part of diffusers).",
    negative_prompt=S2V_NEGATIVE_PROMPT,
    negative_prompt_gloss=S2V_NEGATIVE_PROMPT_GLOSS,
)

DEMO = ModelSpec(
    key="demo",
    title="Demo model (tiny, random weights: makes noise, not real video)",
    task="ti2v",
    hub_id="",
    folder="",
    pipeline="WanPipeline",
    steps=6,
    shift=5.0,
    guidance=5.0,
    guidance_2=None,
    boundary=None,
    frames=17,
    fps=8,
    sizes=((256, 256), (320, 192), (192, 320)),
    size_multiple=32,
    vae="wan2.2",
    components=(
        ComponentSpec("transformer", 150_000, "fp32"),
        ComponentSpec("text_encoder", 100_000, "fp32"),
        ComponentSpec("vae", 100_000, "fp32"),
    ),
    min_side=64,
    max_side=512,
    max_pixels=512 * 512,
    max_frames=49,
    is_demo=True,
    notes="Built in code with seeded random weights; needs no download and no GPU.",
)

DEMO_S2V = ModelSpec(
    key="demo-s2v",
    title="Demo talking head (tiny, random weights: makes noise, not real video)",
    task="s2v",
    hub_id="",
    folder="",
    pipeline="S2VPipeline",
    steps=4,
    shift=3.0,
    guidance=4.5,
    guidance_2=None,
    boundary=None,
    frames=80,
    fps=16,
    sizes=((64, 64),),
    size_multiple=64,
    vae="wan2.1",
    components=(
        ComponentSpec("transformer", 200_000, "fp32"),
        ComponentSpec("text_encoder", 100_000, "fp32"),
        ComponentSpec("vae", 100_000, "fp32"),
        ComponentSpec("audio_encoder", 50_000, "fp32"),
    ),
    min_side=64,
    max_side=256,
    max_pixels=256 * 256,
    max_frames=80,
    requires_image=True,
    requires_audio=True,
    is_demo=True,
    diffusers_layout=False,
    notes="The speech-to-video graph at toy width, built in code; shows the whole flow on a CPU.",
    negative_prompt=S2V_NEGATIVE_PROMPT,
    negative_prompt_gloss=S2V_NEGATIVE_PROMPT_GLOSS,
)

CATALOG: dict[str, ModelSpec] = {
    s.key: s for s in (DEMO, TI2V_5B, T2V_A14B, I2V_A14B, S2V_14B, DEMO_S2V)
}


def get_spec(key: str) -> ModelSpec:
    """Look up a model by key; the error lists the keys that exist."""
    try:
        return CATALOG[key]
    except KeyError:
        raise KeyError(f"unknown model '{key}'; known models: {', '.join(CATALOG)}") from None
