"""``GenerationRequest`` and its validation; ``GenerationResult``.

Validation turns every bad input into a ``RequestError`` whose message says what is wrong and what
to do, before anything heavy happens.
"""

from __future__ import annotations

import dataclasses
import json
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


# Why speech-to-video refuses a field (the table's ``s2v`` column), where several share a reason.
_ONE_CLIP = "makes one clip as long as its speech; long-clip windows do not apply, leave them out"
_NO_CACHE = "has no step cache (its own transformer runs every step); leave the step cache and its threshold out"
_NO_FAST = "has no step-distilled recipe; leave fast and motion_steps out"


class RequestError(ValueError):
    """A request that cannot run as given; the message is written for the user."""


# Where a field can be set besides Python: the Advanced tab, the API's ``settings`` (``/submit``'s
# ``settings_json`` and ``POST /api/v1/jobs``), a batch file's columns, a preset file. The Beginner
# and Intermediate tabs show a fixed few (prompt, images, audio, seed) and take the rest from a preset.
ADVANCED, API, BATCH, PRESET = "advanced", "api", "batch", "preset"
SURFACES = (ADVANCED, API, BATCH, PRESET)
EVERYWHERE = SURFACES


@dataclass(frozen=True)
class FieldSpec:
    """One row of the field table (``FIELDS``): what a request field is and where it is set.

    ``kind`` is its JSON type (``str``, ``int``, ``float``, ``list``, ``dict``); ``low``/``high``
    a range checked by ``validate`` once defaults are filled in, ``choices`` the values allowed
    (both where the range does not depend on the model); ``help`` the sentence a user reads beside
    it; ``s2v`` why speech-to-video refuses the field when it is set (None: S2V uses it), with
    ``s2v_allows`` values that mean the same as leaving it out there; ``upload`` what a file field's
    widget takes.
    """

    kind: type
    help: str
    surfaces: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    s2v: str | None = None
    s2v_allows: tuple[Any, ...] = ()
    upload: str | None = None  # a file field's kind of upload in the tabs: "image", "audio" or "video"
    name: str = ""

    @property
    def label(self) -> str:
        """A widget label: the help's first clause."""
        return self.help.split(";")[0].split(" (")[0]


def knob(kind: type, help: str, surfaces: tuple[str, ...] = (), default: Any = None, **spec: Any) -> Any:
    """A ``GenerationRequest`` field with its row of the field table (``dataclasses.field`` metadata)."""
    return field(default=default, metadata={"spec": FieldSpec(kind, help, tuple(surfaces), **spec)})


@dataclass
class GenerationRequest:
    """One video to make; each field's definition is its row of the field table (``knob``, listed
    in ``FIELDS`` and docs/ARCHITECTURE.md). Sizes in pixels, ``num_frames`` in frames, ``fps``
    frames per second.

    ``None`` fields take the model's defaults in ``resolved()``; ``seed`` ``None`` or negative means
    "pick one", and the picked seed is recorded in the result. A new field is one line here, its use
    in ``engine/generate.py`` and its test: every surface reads this table.
    """

    prompt: str = knob(str, "what should happen in the video", (ADVANCED, BATCH), default=dataclasses.MISSING)
    model: str = knob(str, "model key (see the Models list)", EVERYWHERE, default="demo")
    image: str | None = knob(str, "start image (a file path; not over the API: a server path)", (ADVANCED, BATCH),
                              upload="image")
    negative_prompt: str | None = knob(str, "negative prompt (blank: the model's official one)", (ADVANCED, API, BATCH))
    width: int | None = knob(int, "width in pixels (a multiple of the model's; blank: the model's)", EVERYWHERE)
    height: int | None = knob(int, "height in pixels (a multiple of the model's; blank: the model's)", EVERYWHERE)
    num_frames: int | None = knob(int, "frames, 4k+1 (blank: the model's)", EVERYWHERE,
                                  s2v="makes as many frames as its speech lasts; leave num_frames out")
    fps: int | None = knob(int, "frames per second", EVERYWHERE, low=1, high=60)
    steps: int | None = knob(int, "denoising steps", EVERYWHERE, low=1, high=MAX_STEPS)
    guidance: float | None = knob(float, "guidance scale (1: one transformer pass per step)", EVERYWHERE,
                                  low=0.0, high=20.0)
    guidance_2: float | None = knob(float, "guidance of the low-noise expert (A14B models)", EVERYWHERE,
                                    low=0.0, high=20.0,
                                    s2v="has one transformer: guidance_2 (the A14B low-noise expert's) does not "
                                        "apply; leave it out")
    shift: float | None = knob(float, "sampling shift of the noise schedule", EVERYWHERE, low=0.1, high=30.0)
    seed: int | None = knob(int, "seed (blank or -1: random; the one used is recorded)", (ADVANCED, BATCH),
                            low=0, high=MAX_SEED)
    preset: str | None = knob(str, "preset the request started from", (BATCH,))
    # Speech-to-video inputs (paths); ``last_image`` is the optional end frame of image-to-video.
    audio: str | None = knob(str, "speech audio file (S2V models)", (ADVANCED,), upload="audio")
    pose_video: str | None = knob(str, "pose video (S2V models, optional: the body follows it)", (ADVANCED,),
                                  upload="video")
    last_image: str | None = knob(str, "last frame image (I2V-A14B, optional)", (ADVANCED,), upload="image",
                                  s2v="does not take a last frame; remove it or pick Wan2.2 I2V-A14B")
    # Start image framing: "official" (the model's own sizing within width × height; default) or
    # "crop" (exactly width × height, image centre-cropped). See ``engine.framing``.
    framing: str | None = knob(str, "start image framing: official (follows the image within width × height) or "
                                    "crop (exactly width × height)", EVERYWHERE, choices=("official", "crop"),
                               s2v="sizes the portrait the official way; framing 'crop' does not apply, leave "
                                   "framing out", s2v_allows=("official",))
    # Advanced: a long clip made of windows of ``num_frames`` (``total_frames`` None = one clip),
    # LoRAs from the loras folder, an opt-in step cache.
    total_frames: int | None = knob(int, "frames of a long clip made of windows (blank: one clip)", (ADVANCED, PRESET),
                                    low=5, high=100_000, s2v=_ONE_CLIP)
    window_overlap: int | None = knob(int, "frames two windows of a long clip share", (ADVANCED, PRESET), low=1,
                                      high=1000, s2v=_ONE_CLIP)
    window_prompts: list[str] | None = knob(list, "one prompt per window of a long clip", (ADVANCED,), s2v=_ONE_CLIP)
    loras: list[Any] | None = knob(list, "LoRAs from the loras folder, file.safetensors:weight", (ADVANCED,),
                                   s2v="does not take LoRAs (they load into the Wan2.2 video transformers only); "
                                       "remove them")
    step_cache: str | None = knob(str, "step cache (trades quality for speed)", (ADVANCED,), choices=STEP_CACHES,
                                  s2v=_NO_CACHE)
    cache_threshold: float | None = knob(float, "step cache threshold (blank: the cache's default)", (ADVANCED,),
                                         low=0.001, high=10.0, s2v=_NO_CACHE)
    # Advanced: pinned plan knobs (storage, offload, text_encoder, gpu, attention, compile); the
    # planner checks them (``wan_studio.memory.overrides``). None = everything automatic.
    overrides: dict[str, Any] | None = knob(dict, "pinned plan knobs (blank: automatic)", (ADVANCED,))
    # A step-distilled ("fast") recipe (``wan_studio.engine.distill``): its LoRAs, sampler and grid;
    # ``motion_steps`` first steps then run on the base weights with guidance (more motion, more time).
    fast: str | None = knob(str, "step-distilled recipe (sets steps, shift and guidance)", (ADVANCED, BATCH, PRESET),
                            s2v=_NO_FAST)
    motion_steps: int | None = knob(int, "first steps of a fast job on the base model with guidance",
                                    (ADVANCED, BATCH, PRESET), s2v=_NO_FAST)

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

    @property
    def speech_chunks(self) -> int:
        """How many chunks a speech-to-video job of this request denoises and decodes (its speech's
        length decides); 1 for every other model and without speech. The planner counts by it."""
        if self.audio is None or get_spec(self.model).task != "s2v":
            return 1
        from wan_studio.engine.s2v.runner import speech_chunks

        return speech_chunks(self.audio, self.fps or get_spec(self.model).fps)

    @property
    def speech_video(self) -> tuple[int, int, int] | None:
        """(width, height, frames) of the clip a speech-to-video job of this resolved request writes:
        the portrait's aspect within ``width × height`` (as the pipeline frames it) and as many
        frames as the speech lasts; None for other models, without speech or when the speech
        cannot be read (its validation says why). The planner sizes the job by it."""
        if self.audio is None or get_spec(self.model).task != "s2v" or not (self.width and self.height):
            return None
        from wan_studio.engine.s2v.pipeline import fit_size
        from wan_studio.engine.s2v.runner import speech_frames

        frames = speech_frames(self.audio, self.fps or get_spec(self.model).fps)
        if not frames:
            return None
        width, height = self.width, self.height
        if self.image is not None:
            try:
                from PIL import Image

                with Image.open(self.image) as im:
                    width, height = fit_size(im.width, im.height, self.width * self.height)
            except (OSError, ValueError):
                pass  # an unreadable portrait fails its job's validation
        return width, height, frames

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


FIELDS: dict[str, FieldSpec] = {f.name: dataclasses.replace(f.metadata["spec"], name=f.name)
                                for f in dataclasses.fields(GenerationRequest)}


def fields_on(surface: str) -> tuple[str, ...]:
    """Names of the request fields ``surface`` sets, in table order."""
    return tuple(name for name, f in FIELDS.items() if surface in f.surfaces)


def coerce_text(name: str, value: Any) -> Any:
    """A field's value from text (a CSV cell): a number for a number field, a list or mapping from
    JSON; anything else unchanged. Raises ``RequestError`` naming the field."""
    kind = FIELDS[name].kind
    if not isinstance(value, str) or kind is str:
        return value
    try:
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        what = {int: "a whole number", float: "a number"}.get(kind, f"JSON of a {kind.__name__}")
        raise RequestError(f"{name} must be {what}, got {value!r}") from None


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
    _check_table(r)
    _check_s2v(spec, r)
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


def _check_table(r: GenerationRequest) -> None:
    """Every field with a range or a list of choices in the table, where it is set (defaults filled in)."""
    for f in FIELDS.values():
        value = getattr(r, f.name)
        if value is None:
            continue
        if f.low is not None and f.high is not None:
            _check_number(f.name, value, f.low, f.high, whole=f.kind is int)
        if f.choices is not None and value not in f.choices:
            raise RequestError(f"unknown {f.name.replace('_', ' ')} {value!r}; choose one of {', '.join(f.choices)}")


def _check_s2v(spec: ModelSpec, r: GenerationRequest) -> None:
    """Speech-to-video runs its own pipeline: a field it would not use is refused in words, never
    silently ignored (the table's ``s2v`` column says why)."""
    if spec.task != "s2v":
        return
    unset = GenerationRequest(prompt="-", model=spec.key).resolved()
    for f in FIELDS.values():
        value = getattr(r, f.name)
        if f.s2v is None or value in (None, [], {}) or value in f.s2v_allows or value == getattr(unset, f.name):
            continue
        raise RequestError(f"{spec.title} {f.s2v}")


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
    if r.cache_threshold is not None:
        if r.step_cache is None:
            raise RequestError("cache_threshold needs a step_cache")
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
        if r.window_prompts is not None and (not isinstance(r.window_prompts, list)
                                             or not all(isinstance(p, str) for p in r.window_prompts)):
            raise RequestError("window_prompts must be a list of prompts")
        for p in r.window_prompts or []:
            _check_prompt(p, MAX_PROMPT_CHARS)
        plan_long_clip(r, r.total_frames, r.window_overlap or default_overlap(r.num_frames), r.window_prompts)


def _check_framing(spec: ModelSpec, r: GenerationRequest) -> None:
    """The framing choice, and the frame it gives for this image within the model's limits."""
    from wan_studio.engine.framing import frame_of

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
