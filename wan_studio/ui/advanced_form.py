"""The Advanced tab's form as plain data: widget values → ``GenerationRequest``, the cost line, batches.

No Gradio here, so every rule is testable without a browser; ``advanced.py`` lays out the widgets
in ``FORM_FIELDS`` order and hands their values to these functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from wan_studio.catalog.specs import CATALOG, ModelSpec, get_spec
from wan_studio.engine.accel import choose_attention_backend
from wan_studio.engine.caches import CACHE_LABELS
from wan_studio.engine.distill import RECIPES
from wan_studio.engine.framing import frame_of
from wan_studio.engine.lora import LoraChoice
from wan_studio.engine.request import (ADVANCED, FIELDS, FieldSpec, GenerationRequest, RequestError, default_overlap,
                                      fields_on, validate)
from wan_studio.jobs.batch import RowProblem, read_rows
from wan_studio.memory.overrides import OFFLOAD_CHOICES, STORAGE_CHOICES, TEXT_ENCODER_CHOICES
from wan_studio.memory.plan import Plan, Workload
from wan_studio.services import Studio

AUTO = "auto"
# 1080p for TI2V-5B: its VAE compresses 16× spatially and 4× in time, so 1920×1088 is the nearest
# legal size; the planner plans it with tiled VAE decode.
HD_SIZES: dict[str, tuple[tuple[int, int], ...]] = {"ti2v-5b": ((1920, 1088), (1088, 1920))}
CACHE_CHOICES: list[tuple[str, str]] = [("Off (full quality)", "off")] + [
    (f"{label} — trades quality for speed", key) for key, label in CACHE_LABELS.items()]
ATTENTION_CHOICES = ("cudnn", "flash", "flash3", "sage", "xformers", "sdpa")


@dataclass
class AdvancedForm:
    """Every value of the tab, in widget order. Numbers arrive as floats from Gradio; blank (None) or
    ``0`` in an optional number means "the model's default"."""

    model: str
    prompt: str
    negative_prompt: str
    image: str | None
    last_image: str | None
    audio: str | None
    seed: float
    steps: float | None
    shift: float | None
    guidance: float | None
    guidance_2: float | None
    width: float | None
    height: float | None
    frames: float | None
    fps: float | None
    long_clip: bool
    total_seconds: float
    overlap: float
    window_prompts: str
    loras: str
    step_cache: str
    cache_threshold: float
    storage: str
    offload: str
    text_encoder: str
    gpu: str
    attention: str
    compile: str
    decode: str = "auto"
    fast: str = "off"
    motion_steps: float = 0
    framing: str = "official"  # start image: the model's official framing, or "crop" to width × height
    extra: dict[str, Any] = field(default_factory=dict)  # values of ``TABLE_FIELDS``, by name


# The request fields this form builds by hand (from composite widgets or with a rule of their own);
# every other ``advanced`` field of the field table gets a widget made from its row
# (``advanced.table_widget``) and goes into the request as it is.
BUILT_BY_HAND = frozenset({"prompt", "model", "image", "negative_prompt", "width", "height", "num_frames", "fps",
                           "steps", "guidance", "guidance_2", "shift", "seed", "audio", "last_image", "framing",
                           "total_frames", "window_overlap", "window_prompts", "loras", "step_cache",
                           "cache_threshold", "overrides", "fast", "motion_steps"})
TABLE_FIELDS: tuple[str, ...] = tuple(n for n in fields_on(ADVANCED) if n not in BUILT_BY_HAND)
HAND_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AdvancedForm) if f.name != "extra")
# The tab's inputs, and the named parameters of its API endpoints, in this order (positional
# callers of one release ago pass ``HAND_FIELDS`` only; table fields come after).
FORM_FIELDS: tuple[str, ...] = HAND_FIELDS + TABLE_FIELDS


def form_of(values: dict[str, Any] | Sequence[Any]) -> AdvancedForm:
    """The form from its widget values, by name or in ``FORM_FIELDS`` order."""
    named = dict(values) if isinstance(values, dict) else dict(zip(FORM_FIELDS, values))
    extra = {n: named.pop(n) for n in TABLE_FIELDS if n in named}
    return AdvancedForm(**named, extra=extra)


def table_value(spec: FieldSpec, value: Any) -> Any:
    """A table field's widget value as the request takes it: blank → None (the default), a number
    widget's float → int for a whole-number field, one list item per line, JSON text → a mapping."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind is list and isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if spec.kind is dict and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RequestError(f"{spec.name} must be JSON of a mapping: {e.msg}") from None
    return value
FAST_CHOICES: list[tuple[str, str]] = [("off (the model's own steps and guidance)", "off")] + [
    (f"{r.label} — {get_spec(r.model).title.split(' (')[0]}", r.key) for r in RECIPES.values()]


def model_choices(studio: Studio) -> list[tuple[str, str]]:
    """(label with availability, key) for every model of the catalog."""
    return [(f"{a.spec.title} — {a.status}", a.spec.key) for a in studio.models()]


def size_choices(spec: ModelSpec) -> list[str]:
    """``W×H`` strings the model is made for, 1080p where the model supports it."""
    return [f"{w}×{h}" for w, h in (*spec.sizes, *HD_SIZES.get(spec.key, ()))]


def negative_prompt_help(spec: ModelSpec) -> tuple[str, str]:
    """(placeholder, help text) of the negative prompt box: the model's own default as the
    placeholder (what a blank field sends) and its English gloss as help."""
    if not spec.negative_prompt:
        return "", "Blank = none (this model has no default negative prompt)."
    return spec.negative_prompt, (f"Blank = the model's official negative prompt above (in Chinese, as the model "
                                  f"was trained). In English: {spec.negative_prompt_gloss}")


def _opt(value: float | None) -> int | None:
    """A whole number, or None for blank / 0 (the model's default)."""
    return None if value in (None, "") or float(value) == 0 else int(value)  # type: ignore[arg-type]


def _optf(value: float | None) -> float | None:
    return None if value in (None, "") or float(value) == 0 else float(value)  # type: ignore[arg-type]


def parse_loras(text: str) -> list[dict[str, Any]] | None:
    """One LoRA per line, ``file.safetensors:weight[:weight_low_noise]``; blank → none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    out = []
    for line in lines:
        c = LoraChoice.parse(line)
        out.append({"file": c.file, "weight": c.weight, **({"weight_2": c.weight_2} if c.weight_2 is not None else {})})
    return out


def overrides_of_form(form: AdvancedForm) -> dict[str, Any] | None:
    """The pinned plan knobs (``auto`` ones left out); None when all are automatic."""
    pins: dict[str, Any] = {k: getattr(form, k) for k in ("storage", "offload", "text_encoder", "gpu", "attention")
                            if getattr(form, k) not in (None, "", AUTO)}
    if form.compile in ("on", "off"):
        pins["compile"] = form.compile == "on"
    if form.decode not in (None, "", AUTO):
        pins["decode"] = form.decode
    return pins or None


def build_request(form: AdvancedForm, prompt: str | None = None, seed: int | None = None) -> GenerationRequest:
    """The request the form describes (``prompt``/``seed`` replace the form's, for batches).

    Not validated here: ``Studio.submit`` validates and plans it.
    """
    spec = get_spec(form.model)
    fps = _opt(form.fps) or spec.fps
    total = windows = overlap = None
    if form.long_clip:
        if not form.total_seconds or form.total_seconds <= 0:
            raise RequestError("a long clip needs its total length in seconds")
        total = int(round(float(form.total_seconds) * fps)) // 4 * 4 + 1  # 4k+1 like every clip
        overlap = _opt(form.overlap)
        lines = [p.strip() for p in (form.window_prompts or "").splitlines() if p.strip()]
        windows = lines or None
    seed_value = seed if seed is not None else (None if form.seed is None or form.seed < 0 else int(form.seed))
    cache = None if form.step_cache in (None, "", "off") else form.step_cache
    fast = None if form.fast in (None, "", "off") else form.fast
    if fast is not None:  # the recipe's steps, shift and guidance, not the form's model defaults
        form = dataclasses.replace(form, steps=0, shift=0, guidance=0, guidance_2=0)
    return GenerationRequest(
        prompt=prompt if prompt is not None else form.prompt,
        model=spec.key,
        image=form.image or None,
        last_image=form.last_image or None,
        audio=form.audio or None,
        negative_prompt=form.negative_prompt or None,
        width=_opt(form.width), height=_opt(form.height), num_frames=_opt(form.frames), fps=fps,
        steps=_opt(form.steps), shift=_optf(form.shift), guidance=_optf(form.guidance),
        guidance_2=_optf(form.guidance_2) if spec.guidance_2 is not None else None,
        seed=seed_value, preset="advanced",
        total_frames=total, window_overlap=overlap, window_prompts=windows,
        loras=parse_loras(form.loras), step_cache=cache,
        cache_threshold=_optf(form.cache_threshold) if cache else None,
        overrides=overrides_of_form(form), fast=fast, motion_steps=_opt(form.motion_steps) if fast else None,
        framing="crop" if form.framing == "crop" else None,
        **{n: table_value(FIELDS[n], form.extra.get(n)) for n in TABLE_FIELDS},
    )


def _duration(seconds: float) -> str:
    if seconds < 0.95:
        return f"{max(seconds, 0.001) * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def windows_of(request: GenerationRequest) -> int:
    """How many windows a validated request makes (1 for a normal clip)."""
    if request.total_frames is None:
        return 1
    from wan_studio.engine.long_video import plan_long_clip

    return len(plan_long_clip(request, request.total_frames, request.window_overlap or default_overlap(request.num_frames),
                              request.window_prompts).windows())


def cost_line(studio: Studio, form: AdvancedForm) -> str:
    """Markdown: predicted peak VRAM and time of the current settings, or why they cannot run.

    What Generate would refuse is said first (a model not downloaded, an empty prompt), but the cost
    is still shown: it does not depend on the prompt's words, and it helps to choose a model to fetch.
    A model that is not here is said even when the settings cannot run on this machine.
    """
    spec = CATALOG.get(form.model)
    avail = studio.availability(spec) if spec is not None else None
    first = "" if avail is None or avail.usable else f"**{spec.title} is {avail.status}:** {avail.detail}  \n"
    try:
        request = build_request(form, seed=0)
        blank = not (request.prompt or "").strip()
        if blank:
            request.prompt = "cost"  # any words cost the same; the note below asks for the real ones
        r = validate(request, studio.settings.max_prompt_chars)
        plan = studio.plans(r)[0]
        n = windows_of(r)
    except (RequestError, KeyError) as e:
        return first + f"**Cannot run as set:** {e.args[0] if isinstance(e, KeyError) else e}"
    last = "  \n*Type a prompt to Generate.*" if blank else ""
    return first + cost_text(plan, r, n) + last


def cost_text(plan: Plan, r: GenerationRequest, windows: int) -> str:
    """Markdown "**This will cost:** …" for a validated request ``r`` made in ``windows`` windows
    under ``plan`` (peak VRAM per device, host RAM, denoising time, size, frames, steps, passes)."""
    vram = (", ".join(f"{gib:.1f} GiB on {dev}" for dev, gib in plan.to_dict()["peak_vram_gib"].items())
            or "none (runs on the CPU)")
    tiled = f" · VAE decode in {plan.vae_tile[0]} px tiles" if plan.vae_tiling else ""
    w, h = frame_of(r)
    framed = f" (frame follows the image within {r.width}×{r.height})" if (w, h) != (r.width, r.height) else ""
    return (f"**This will cost:** peak VRAM {vram} · host RAM {plan.host_ram_bytes / 2**30:.1f} GiB · "
            f"{time_text(plan, windows)} · {w}×{h}{framed}, "
            f"{r.total_frames or r.num_frames} frames, {r.steps} steps, {passes_text(r)} · plan: {plan.label}{tiled}")


def time_text(plan: Plan, windows: int = 1) -> str:
    """The predicted time of a job by phase, e.g. ``about 24 s for the job (340 ms text, 4 s of
    denoising, 16 s decode, 3 s mp4); a worker that has not loaded the model first adds 9 s
    loading and 14 s compiling at once (14 s in all), one that has run it only at another size 5 s
    recompiling``. A long clip's windows each pay text to mp4; loading once."""
    ph = plan.phase_s
    if not ph:
        per = f" ({windows} windows × {_duration(plan.job_s)})" if windows > 1 else ""
        return f"about {_duration(plan.job_s * windows)} of denoising{per}"
    per = f"{windows} windows × " if windows > 1 else ""
    parts = (f"{per}{_duration(ph['text_s'])} text, {_duration(ph['steps_s'])} of denoising, "
             f"{_duration(ph['decode_s'])} decode, {_duration(ph['write_s'])} mp4")
    first = f"; a worker that has not loaded the model first adds {_duration(ph['load_s'])} loading"
    if ph.get("compile_s", 0.0) >= 0.5:
        first += f" and {_duration(ph['compile_s'])} compiling"
        if ph.get("compile_hidden_s", 0.0) >= 0.5:  # the compile runs beside the load
            first += f" at once ({_duration(plan.cold_extra_s)} in all)"
    if ph.get("recompile_s", 0.0) >= 0.5:
        first += f", one that has run it only at another size {_duration(ph['recompile_s'])} recompiling"
    return f"about {_duration(plan.warm_job_s * windows)} for the job ({parts}){first}"


def passes_text(r: GenerationRequest) -> str:
    """How many transformer passes the steps take, e.g. ``one pass each (guidance 1)``."""
    work = Workload.from_request(r)
    if work.passes_per_step == 1.0:
        return "one pass each (guidance 1)"
    if work.passes_per_step == 2.0:
        return "two passes each (guidance)"
    n = work.guided_steps or 0
    return f"the first {n} step{'s' if n > 1 else ''} with two passes (motion phase), the rest one each"


def automatic_text(studio: Studio, form: AdvancedForm) -> str:
    """Markdown: what the planner picks with nothing pinned, to show beside the overrides."""
    try:
        r = validate(build_request(form, seed=0), studio.settings.max_prompt_chars)
        auto = studio.plans(GenerationRequest(**{**r.to_dict(), "overrides": None}))[0]
    except RequestError as e:
        return f"Automatic choice: none ({e})"
    main = auto.placement("transformer")
    te = auto.placement("text_encoder")
    gpus = studio.hardware.gpus
    attention = choose_attention_backend(gpus[0].capability if gpus else None)
    if studio.settings.attention != AUTO:  # --attention chose the workers' kernel
        attention = type(attention)(studio.settings.attention, "set by --attention")  # type: ignore[arg-type]
    return (f"**Automatic choice:** storage {main.storage if main else '-'} · offload {main.offload if main else '-'} · "
            f"text encoder on {te.device if te else '-'} · GPU {auto.primary_device} · attention {attention.backend} "
            f"({attention.why}) · compile on where it pays (bf16, resident or model offload, CUDA) · VAE decode fp32"
            f"  \n*Why:* {auto.why}")


def gpu_choices(studio: Studio) -> list[tuple[str, str]]:
    """``auto`` plus every GPU of this machine (or the CPU without one)."""
    found = [(f"GPU {g.index}: {g.name}", g.device) for g in studio.hardware.gpus] or [("CPU", "cpu")]
    return [("automatic", AUTO), *found]


def knob_choices() -> dict[str, list[tuple[str, str]]]:
    """Dropdown choices for each plan override, ``auto`` first."""
    auto = [("automatic", AUTO)]
    return {"storage": auto + [(v, k) for k, v in STORAGE_CHOICES.items()],
            "offload": auto + [(v, k) for k, v in OFFLOAD_CHOICES.items()],
            "text_encoder": auto + [(v, k) for k, v in TEXT_ENCODER_CHOICES.items()],
            "attention": auto + [(k, k) for k in ATTENTION_CHOICES]}


def batch_requests(form: AdvancedForm, prompts_text: str, seeds: int,
                   first_seed: int) -> tuple[list[GenerationRequest], list[RowProblem]]:
    """Prompts (one per line, read like a TXT batch) × ``seeds`` consecutive seeds, with the form's
    other settings; a bad line becomes a problem with its line number."""
    if not 1 <= seeds <= 100:
        raise RequestError(f"seeds per prompt must be 1–100, got {seeds}")
    rows, problems = read_rows(prompts_text or "", "txt")
    out: list[GenerationRequest] = []
    for line, row in rows:
        try:
            out += [build_request(form, prompt=row["prompt"], seed=first_seed + k) for k in range(seeds)]
        except RequestError as e:
            problems.append(RowProblem(line, str(e)))
    return out, problems


def all_models() -> list[str]:
    """Every catalog key (tests and the dropdown agree on this)."""
    return list(CATALOG)


# Inputs that are files: a video's record names them, but they are not inside it.
FILE_FIELDS = {"image": "start image", "last_image": "last image", "audio": "speech", "pose_video": "pose video"}


def form_of_record(request: dict[str, Any], gpus: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The form values (``FORM_FIELDS`` except the file inputs) that remake a recorded request, and
    notes for the user (files to add again, pins this machine cannot honour). ``gpus``: the device
    names a GPU pin may keep (others fall back to automatic)."""
    known = {f.name for f in fields(GenerationRequest)}
    r = GenerationRequest(**{k: v for k, v in request.items() if k in known and k != "prompt"},
                          prompt=str(request.get("prompt") or ""))
    if r.model not in CATALOG:
        raise RequestError(f"the video was made with the model {r.model!r}, which this version of the app does not "
                           f"know (it knows {', '.join(CATALOG)})")
    notes = [f"add the {label} again: it is not inside the video" for key, label in FILE_FIELDS.items()
             if getattr(r, key)]
    pins = dict(r.overrides or {})
    if pins.get("gpu") is not None and pins["gpu"] not in (gpus or []):
        notes.append(f"this machine has no {pins['gpu']}: the GPU is chosen automatically")
        pins.pop("gpu")
    fps = r.fps or get_spec(r.model).fps
    loras = [":".join(str(x) for x in (d.get("file"), d.get("weight", 1.0), d.get("weight_2")) if x is not None)
             if isinstance(d, dict) else str(d) for d in (r.loras or [])]
    values: dict[str, Any] = dict(
        model=r.model, prompt=r.prompt, negative_prompt=r.negative_prompt or "",
        seed=r.seed if r.seed is not None else -1, steps=r.steps or 0, shift=r.shift or 0,
        guidance=r.guidance or 0, guidance_2=r.guidance_2 or 0, width=r.width or 0, height=r.height or 0,
        frames=r.num_frames or 0, fps=fps, long_clip=r.total_frames is not None,
        total_seconds=round(r.total_frames / fps, 4) if r.total_frames else 10, overlap=r.window_overlap or 0,
        window_prompts="\n".join(r.window_prompts or []), loras="\n".join(loras), step_cache=r.step_cache or "off",
        cache_threshold=r.cache_threshold or 0, fast=r.fast or "off", motion_steps=r.motion_steps or 0,
        framing=r.framing or "official", decode=pins.get("decode") or AUTO,
        compile=AUTO if pins.get("compile") is None else ("on" if pins["compile"] else "off"),
        **{k: pins.get(k) or AUTO for k in ("storage", "offload", "text_encoder", "gpu", "attention")},
        **{n: widget_text(getattr(r, n)) for n in TABLE_FIELDS if n not in FILE_FIELDS})
    return values, notes


def widget_text(value: Any) -> Any:
    """A table field's value as its widget shows it (the reverse of ``table_value``)."""
    if isinstance(value, list):
        return "\n".join(map(str, value))
    return json.dumps(value) if isinstance(value, dict) else value
