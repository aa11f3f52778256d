"""``GenerationRequest`` and its validation; ``GenerationResult``.

Validation turns every bad input into a ``RequestError`` whose message says what is wrong and what
to do, before anything heavy happens.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from wan_studio.catalog.specs import ModelSpec, get_spec
from wan_studio.engine.text import TextError, check_text

MAX_PROMPT_CHARS = 4000
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MIN_IMAGE_SIDE = 16
MAX_SEED = 2**32 - 1
MAX_STEPS = 100
STEP_CACHES = ("first_block", "mag", "taylorseer")


class RequestError(ValueError):
    """A request that cannot run as given; the message is written for the user."""


@dataclass
class GenerationRequest:
    """One video to make. Sizes in pixels, ``num_frames`` in frames, ``fps`` frames per second.

    ``None`` fields take the model's defaults in ``resolved()``; ``seed`` ``None`` or negative means
    "pick one", and the picked seed is recorded in the result.
    """

    prompt: str
    model: str = "demo"
    image: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_2: float | None = None
    shift: float | None = None
    seed: int | None = None
    preset: str | None = None
    # Speech-to-video inputs (paths); ``last_image`` is the optional end frame of image-to-video.
    audio: str | None = None
    pose_video: str | None = None
    last_image: str | None = None
    # Start image framing: "official" (the model's own sizing within width × height; default) or
    # "crop" (exactly width × height, image centre-cropped). See ``engine.framing``.
    framing: str | None = None
    # Advanced: a long clip made of windows of ``num_frames`` (``total_frames`` None = one clip),
    # LoRAs from the loras folder, an opt-in step cache.
    total_frames: int | None = None
    window_overlap: int | None = None
    window_prompts: list[str] | None = None
    loras: list[Any] | None = None
    step_cache: str | None = None
    cache_threshold: float | None = None
    # Advanced: pinned plan knobs (storage, offload, text_encoder, gpu, attention, compile); the
    # planner checks them (``wan_studio.memory.overrides``). None = everything automatic.
    overrides: dict[str, Any] | None = None
    # A step-distilled ("fast") recipe (``wan_studio.engine.distill``): its LoRAs, sampler and grid;
    # ``motion_steps`` first steps then run on the base weights with guidance (more motion, more time).
    fast: str | None = None
    motion_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Build from a dict; unknown keys are an error, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RequestError(f"unknown request field(s): {', '.join(unknown)}")
        return cls(**data)

    def resolved(self) -> GenerationRequest:
        """A copy with every default filled in from the model spec and a concrete seed."""
        spec = get_spec(self.model)
        fast = _fast_defaults(self)
        if fast:
            spec = dataclasses.replace(spec, **{k: v for k, v in fast.items() if k in ("steps", "guidance", "guidance_2", "shift")})
        w, h = spec.default_size
        seed = self.seed
        if seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed < 0):
            seed = secrets.randbelow(MAX_SEED)
        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return dataclasses.replace(
            self,
            negative_prompt=pick(self.negative_prompt, spec.negative_prompt),
            width=pick(self.width, w),
            height=pick(self.height, h),
            num_frames=pick(self.num_frames, spec.frames),
            fps=pick(self.fps, spec.fps),
            steps=pick(self.steps, spec.steps),
            guidance=pick(self.guidance, spec.guidance),
            guidance_2=pick(self.guidance_2, spec.guidance_2),
            shift=pick(self.shift, spec.shift),
            seed=seed,
            motion_steps=pick(self.motion_steps, fast.get("motion_steps")),
            overrides=fast.get("overrides", self.overrides),
        )


def _fast_defaults(r: GenerationRequest) -> dict[str, Any]:
    """What a fast recipe fills in when the request leaves it out (empty without one)."""
    if r.fast is None:
        return {}
    from wan_studio.engine.distill import RECIPES  # distill imports nothing of this module

    recipe = RECIPES.get(r.fast)
    if recipe is None:
        return {}  # validate() names the unknown recipe
    # bf16 VAE decode: at 4 steps the fp32 decode is most of the job (docs/FAST.md says what
    # quality rests on); an explicit decode override wins.
    overrides = dict(r.overrides or {})
    overrides.setdefault("decode", "bf16")
    return {"steps": recipe.steps, "guidance": recipe.guidance, "guidance_2": recipe.guidance
            if get_spec(r.model).boundary is not None else None, "shift": recipe.shift,
            "motion_steps": recipe.motion_steps, "overrides": overrides}


@dataclass
class GenerationResult:
    """What a finished generation left on disk and how it went. Times in seconds, memory in bytes."""

    video_path: Path
    sidecar_path: Path
    request: GenerationRequest
    timings: dict[str, float] = field(default_factory=dict)
    peak_vram_bytes: int | None = None


def validate(request: GenerationRequest, max_prompt_chars: int = MAX_PROMPT_CHARS) -> GenerationRequest:
    """Check a request against its model's limits; return it resolved, or raise ``RequestError``."""
    try:
        spec = get_spec(request.model)
    except KeyError as e:
        raise RequestError(str(e.args[0])) from None
    _check_texts(request)
    _check_prompt(request.prompt, max_prompt_chars)
    if request.negative_prompt is not None and len(request.negative_prompt) > max_prompt_chars:
        raise RequestError(
            f"the negative prompt has {len(request.negative_prompt)} characters; the limit is {max_prompt_chars}"
        )
    r = request.resolved()
    _check_size(spec, r.width, r.height)
    if spec.task != "s2v":  # speech-to-video length follows the audio, not num_frames
        _check_frames(spec, r.num_frames)
    _check_number("fps", r.fps, 1, 60, whole=True)
    _check_number("steps", r.steps, 1, MAX_STEPS, whole=True)
    _check_number("guidance", r.guidance, 0.0, 20.0)
    if r.guidance_2 is not None:
        _check_number("guidance_2", r.guidance_2, 0.0, 20.0)
    _check_number("shift", r.shift, 0.1, 30.0)
    _check_number("seed", r.seed, 0, MAX_SEED, whole=True)
    if r.image is not None and not spec.accepts_image:
        raise RequestError(f"{spec.title} makes video from text only; remove the image or pick another model")
    if r.image is None and spec.requires_image:
        raise RequestError(f"{spec.title} needs a start image; add one")
    if r.image is not None:
        check_image(r.image)
        _check_framing(spec, r)
    _check_extra_inputs(spec, r)
    _check_advanced(spec, r)
    _check_fast(spec, r)
    return r


def _check_fast(spec: ModelSpec, r: GenerationRequest) -> None:
    """A fast recipe made for this model, a step count its grid has, a motion phase shorter than the job."""
    if r.fast is None:
        if r.motion_steps:
            raise RequestError("motion_steps belongs to a fast (distilled) job; pick a Fast preset or set fast")
        return
    from wan_studio.engine.distill import RECIPES

    recipe = RECIPES.get(r.fast)
    if recipe is None:
        raise RequestError(f"unknown fast recipe {r.fast!r}; choose one of {', '.join(RECIPES)}")
    if recipe.model != spec.key:
        raise RequestError(f"the fast recipe {recipe.label} is made for {get_spec(recipe.model).title}, not "
                           f"{spec.title}; pick that model or another recipe")
    if recipe.sigmas is not None and r.steps != len(recipe.sigmas):
        raise RequestError(f"{recipe.label} was distilled for exactly {len(recipe.sigmas)} steps; set steps to "
                           f"{len(recipe.sigmas)}")
    from wan_studio.engine.distill import high_noise_steps

    high = high_noise_steps(recipe, r.steps, r.shift, spec.boundary)
    limit = min(high, r.steps - 1)
    _check_number("motion_steps", r.motion_steps or 0, 0, max(limit, 0), whole=True)
    if r.step_cache is not None:
        # MagCache and TaylorSeer are tuned on 40–50-step curves; at 4 steps each step moves the
        # video a quarter of the way, so none can be skipped or predicted.
        raise RequestError(f"a step cache skips or predicts steps; a {r.steps}-step distilled job needs every "
                           "step, so leave the step cache off")


def default_overlap(window_frames: int) -> int:
    """Frames shared by two long-clip windows when the user does not say: about a third of a second."""
    return max(1, min(8, window_frames // 4))


def _check_advanced(spec: ModelSpec, r: GenerationRequest) -> None:
    """Long-clip, LoRA and step-cache fields (the files of LoRAs are checked where the folder is known)."""
    if r.overrides is not None and not isinstance(r.overrides, dict):
        raise RequestError("overrides must be a mapping of plan knob → value")
    if r.step_cache is not None and r.step_cache not in STEP_CACHES:
        raise RequestError(f"unknown step cache {r.step_cache!r}; choose one of {', '.join(STEP_CACHES)}")
    if r.cache_threshold is not None:
        if r.step_cache is None:
            raise RequestError("cache_threshold needs a step_cache")
        _check_number("cache_threshold", r.cache_threshold, 0.001, 10.0)
    if r.loras is not None:
        from wan_studio.engine.lora import MAX_LORAS, LoraChoice  # lora imports this module

        if not isinstance(r.loras, list) or len(r.loras) > MAX_LORAS:
            raise RequestError(f"loras must be a list of at most {MAX_LORAS} entries")
        for item in r.loras:
            LoraChoice.parse(item)
    if r.total_frames is not None or r.window_prompts is not None or r.window_overlap is not None:
        from wan_studio.engine.long_video import plan_long_clip  # long_video imports this module

        if r.total_frames is None:
            raise RequestError("window settings need total_frames (the length of the long clip)")
        _check_number("total_frames", r.total_frames, 5, 100_000, whole=True)
        if r.window_overlap is not None:
            _check_number("window_overlap", r.window_overlap, 1, 1000, whole=True)
        if r.window_prompts is not None and (not isinstance(r.window_prompts, list)
                                             or not all(isinstance(p, str) for p in r.window_prompts)):
            raise RequestError("window_prompts must be a list of prompts")
        for p in r.window_prompts or []:
            _check_prompt(p, MAX_PROMPT_CHARS)
        plan_long_clip(r, r.total_frames, r.window_overlap or default_overlap(r.num_frames), r.window_prompts)


def _check_framing(spec: ModelSpec, r: GenerationRequest) -> None:
    """The framing choice, and the frame it gives for this image within the model's limits."""
    from wan_studio.engine.framing import FRAMINGS, frame_of

    if r.framing is not None and r.framing not in FRAMINGS:
        raise RequestError(f"unknown framing {r.framing!r}; choose one of {', '.join(FRAMINGS)}")
    w, h = frame_of(r)
    if (w, h) != (r.width, r.height):
        try:
            _check_size(spec, w, h)
        except RequestError as e:
            raise RequestError(f"the image's shape gives a {w}×{h} frame: {e}; use a less elongated image or "
                               "framing 'crop' (crop to the chosen size)") from None


def _check_extra_inputs(spec: ModelSpec, r: GenerationRequest) -> None:
    """Audio, pose video and last frame: only where the model uses them, and readable."""
    if r.last_image is not None:
        if spec.task != "i2v":
            raise RequestError(f"{spec.title} does not take a last frame; remove it or pick Wan2.2 I2V-A14B")
        if r.image is None:
            raise RequestError("a last frame needs a start image too; add the start image")
        check_image(r.last_image)
    if spec.requires_audio and r.audio is None:
        raise RequestError(f"{spec.title} needs a speech audio file (WAV, MP3, FLAC or M4A); add one")
    if not spec.requires_audio and (r.audio is not None or r.pose_video is not None):
        raise RequestError(f"{spec.title} does not use audio or a pose video; remove them or pick Wan2.2 S2V-14B")
    if spec.task == "s2v":
        # Imported here: the speech checks need ffmpeg and the S2V package only for this model.
        from wan_studio.engine.s2v.inputs import check_portrait, check_pose_video
        from wan_studio.engine.s2v.audio_io import AudioError, load_speech

        check_portrait(r.image)
        try:
            load_speech(r.audio)
        except AudioError as e:
            raise RequestError(str(e)) from None
        if r.pose_video is not None:
            check_pose_video(r.pose_video)


def _check_texts(request: GenerationRequest) -> None:
    """Every text field is valid Unicode without NUL, before anything is stored (``engine.text``)."""
    for f in dataclasses.fields(request):
        try:
            check_text(getattr(request, f.name), f.name.replace("_", " "))
        except TextError as e:
            raise RequestError(str(e)) from None


def _check_prompt(prompt: object, limit: int) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("the prompt is empty; describe the video you want")
    if len(prompt) > limit:
        raise RequestError(
            f"the prompt has {len(prompt)} characters; the limit is {limit} "
            "(the text encoder reads at most 512 tokens)"
        )


def _check_number(name: str, value: object, low: float, high: float, whole: bool = False) -> None:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise RequestError(f"{name} must be a {'whole ' if whole else ''}number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {value}")


def _check_size(spec: ModelSpec, width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise RequestError(f"{name} must be a whole number of pixels, got {v!r}")
        if v % spec.size_multiple:
            lower = v // spec.size_multiple * spec.size_multiple
            raise RequestError(
                f"{name} {v} is not a multiple of {spec.size_multiple} for {spec.title}; "
                f"try {lower} or {lower + spec.size_multiple}"
            )
        if not spec.min_side <= v <= spec.max_side:
            raise RequestError(
                f"{name} {v} is outside {spec.min_side}–{spec.max_side} pixels for {spec.title}"
            )
    if width * height > spec.max_pixels:
        raise RequestError(
            f"{width}×{height} is {width * height:,} pixels; {spec.title} allows at most {spec.max_pixels:,}"
        )


def _check_frames(spec: ModelSpec, frames: int) -> None:
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise RequestError(f"num_frames must be a whole number, got {frames!r}")
    if frames < 5 or frames > spec.max_frames:
        raise RequestError(f"num_frames {frames} is outside 5–{spec.max_frames} for {spec.title}")
    if (frames - 1) % 4:
        lower = (frames - 1) // 4 * 4 + 1
        raise RequestError(
            f"num_frames must be 4k+1 (the VAE packs 4 frames into one latent); try {lower} or {lower + 4}"
        )


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Check that ``path`` is a readable, sane image; return its (width, height) in pixels.

    The pixel count is read from the header before decoding, so a decompression bomb is refused
    without being decoded.
    """
    p = Path(path)
    if not p.is_file():
        raise RequestError(f"the image file {p.name!r} does not exist")
    size = p.stat().st_size
    if size == 0:
        raise RequestError(f"the image {p.name!r} is empty (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        raise RequestError(f"the image {p.name!r} is {size / 2**20:.0f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise RequestError(
                    f"the image is {w}×{h} ({w * h / 1e6:.0f} megapixels); the limit is "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels — scale it down first"
                )
            if min(w, h) < MIN_IMAGE_SIDE:
                raise RequestError(f"the image is {w}×{h}; each side needs at least {MIN_IMAGE_SIDE} pixels")
            im.load()
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(
            f"the image {p.name!r} declares more than {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; scale it down first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RequestError(f"the image {p.name!r} cannot be read ({type(e).__name__}); use a PNG, JPEG or WebP file") from None
    return w, h


def load_image(path: str | os.PathLike[str], width: int, height: int) -> Image.Image:
    """Open an image as RGB, centre-cropped to the aspect of ``width``×``height`` and resized to it."""
    from wan_studio.engine.framing import crop_to_size

    with Image.open(path) as im:
        return crop_to_size(im.convert("RGB"), (width, height))
