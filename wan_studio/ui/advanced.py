"""Advanced tab: every model and every knob — long clips, 1080p, LoRAs, step caches, plan overrides,
batches — with a live "this will cost" line. Jobs go through the queue, so they show in the Queue tab.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.generate import GenerationCancelled
from wan_studio.engine.framing import FRAMING_LABELS
from wan_studio.engine.lora import list_loras
from wan_studio.engine.request import FIELDS, FieldSpec, RequestError, validate
from wan_studio.services import JobFailed, Studio, result_of
from wan_studio.jobs.recorded import NoRecordedSettings
from wan_studio.ui.advanced_form import (AUTO, CACHE_CHOICES, FAST_CHOICES, FILE_FIELDS, FORM_FIELDS, HAND_FIELDS,
                                         TABLE_FIELDS, AdvancedForm, automatic_text, batch_requests, build_request,
                                         cost_line, form_of, form_of_record, gpu_choices, knob_choices, model_choices,
                                         negative_prompt_help, size_choices)
from wan_studio.ui import models_panel
from wan_studio.ui.errors import user_error
from wan_studio.ui.live import LiveView, arm, follow, render_view
from wan_studio.ui.preset_costs import PRESET_FORM_FIELDS, form_of_preset, presets_markdown


@dataclass
class AdvancedTab:
    """Widgets of the tab: ``form`` in ``FORM_FIELDS`` order, then the rest."""

    form: dict[str, gr.components.Component]
    size: gr.Dropdown
    lora_pick: gr.Dropdown
    cost: gr.Markdown
    automatic: gr.Markdown
    generate: gr.Button
    cancel: gr.Button
    calibrate: gr.Button
    video: gr.Video
    file: gr.File
    params: gr.JSON
    status: gr.Markdown
    batch_prompts: gr.Textbox
    batch_seeds: gr.Number
    batch_first_seed: gr.Number
    batch_go: gr.Button
    batch_status: gr.Markdown
    preset: gr.Dropdown
    settings_video: gr.File
    load_settings: gr.Button
    load_status: gr.Markdown
    live: LiveView

    @property
    def inputs(self) -> list[gr.components.Component]:
        """The form's widgets in ``AdvancedForm`` field order."""
        return [self.form[name] for name in FORM_FIELDS]


# The form's numbers that default to the model's own: blank, with the model's value shown as the
# placeholder, so a blank field (and a script that leaves the parameter out) means "the model's".
MODEL_NUMBERS = ("width", "height", "frames", "fps", "steps", "shift", "guidance", "guidance_2")


def model_blanks(key: str) -> dict[str, dict[str, Any]]:
    """For each of ``MODEL_NUMBERS``: a blank value with the model's default as its placeholder."""
    spec = get_spec(key)
    w, h = spec.default_size
    own = dict(width=w, height=h, frames=spec.frames, fps=spec.fps, steps=spec.steps, shift=spec.shift,
               guidance=spec.guidance, guidance_2=spec.guidance_2)
    return {n: {"value": None, "placeholder": "" if own[n] is None else f"{own[n]:g} (the model's)"}
            for n in MODEL_NUMBERS}


def _model_widgets(studio: Studio, key: str) -> dict[str, gr.components.Component]:
    spec = get_spec(key)
    blank = model_blanks(key)
    f: dict[str, gr.components.Component] = {}
    f["model"] = gr.Dropdown(model_choices(studio), value=key, label="Model", elem_id="adv-model")
    f["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id="adv-prompt")
    placeholder, gloss = negative_prompt_help(spec)
    f["negative_prompt"] = gr.Textbox(label="Negative prompt (blank = the model's)", lines=2, elem_id="adv-negative",
                                      placeholder=placeholder, info=gloss)
    with gr.Row():
        f["image"] = gr.Image(label="Start image", type="filepath", sources=["upload"], elem_id="adv-image")
        f["last_image"] = gr.Image(label="Last image (I2V-A14B)", type="filepath", sources=["upload"],
                                   elem_id="adv-last-image")
    f["audio"] = gr.Audio(label="Speech (S2V models)", type="filepath", sources=["upload"], elem_id="adv-audio")
    with gr.Row():
        f["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="adv-seed")
        f["steps"] = gr.Number(label="Steps", precision=0, elem_id="adv-steps", **blank["steps"])
        f["shift"] = gr.Number(label="Shift", elem_id="adv-shift", **blank["shift"])
        f["guidance"] = gr.Number(label="Guidance", elem_id="adv-guidance", **blank["guidance"])
        f["guidance_2"] = gr.Number(label="Guidance, low-noise expert (A14B)", elem_id="adv-guidance-2",
                                    **blank["guidance_2"])
    with gr.Row():
        f["width"] = gr.Number(label="Width", precision=0, elem_id="adv-width", **blank["width"])
        f["height"] = gr.Number(label="Height", precision=0, elem_id="adv-height", **blank["height"])
        f["frames"] = gr.Number(label="Frames (4k+1; one window of a long clip)", precision=0,
                                elem_id="adv-frames", **blank["frames"])
        f["fps"] = gr.Number(label="fps", precision=0, elem_id="adv-fps", **blank["fps"])
    f["framing"] = gr.Radio([(label, key) for key, label in FRAMING_LABELS.items()], value="official",
                            label="Start image framing (width × height is the area the frame fits in)",
                            elem_id="adv-framing")
    return f


def table_widget(spec: FieldSpec) -> gr.components.Component:
    """The widget of a field-table row the form does not lay out by hand: an upload for a file, a
    choice for a closed list, a number, or text; blank is the default. Its label and help come from
    the table."""
    common: dict[str, Any] = dict(label=spec.label, info=spec.help, elem_id=f"adv-{spec.name.replace('_', '-')}")
    if spec.upload is not None:
        common.pop("info")
        upload = {"image": gr.Image, "audio": gr.Audio, "video": gr.Video}[spec.upload]
        return upload(sources=["upload"], **({"type": "filepath"} if spec.upload != "video" else {}), **common)
    if spec.choices is not None:
        return gr.Dropdown(list(spec.choices), value=None, **common)
    if spec.kind in (int, float):
        return gr.Number(value=None, precision=0 if spec.kind is int else None, minimum=spec.low, maximum=spec.high,
                         **common)
    return gr.Textbox(lines=3 if spec.kind in (list, dict) else 1, **common)


def named(fn: Callable[[dict[str, Any], Any, Any], Any], names: Sequence[str], special: bool = True) -> Callable[..., Any]:
    """``fn(values_by_name, request, progress)`` as an event function whose signature names every
    input: Gradio takes the API's parameter names from it, and each parameter without a widget value
    gets the API default None (so a script may leave out any optional input). ``special``: the
    function also takes the caller's request and a progress bar."""
    def endpoint(*args: Any) -> Any:
        values, rest = args[:len(names)], args[len(names):]
        return fn(dict(zip(names, values)), *(rest if special else (None, None)))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, kind, default=None) for n in names]
    if special:
        params += [inspect.Parameter("request", kind, default=None, annotation=gr.Request),
                   inspect.Parameter("progress", kind, default=gr.Progress())]
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {"request": gr.Request} if special else {}
    endpoint.__name__ = endpoint.__qualname__ = getattr(fn, "__name__", "endpoint")
    endpoint.__doc__ = fn.__doc__
    return endpoint


def render(studio: Studio) -> AdvancedTab:
    """Lay out the tab; call inside a ``gr.Tab``."""
    key = studio.default_preset("beginner").fields["model"]
    knobs = knob_choices()
    gr.Markdown("Every model and every setting. Jobs join the queue (see the **Queue** tab); "
                "the line above **Generate** predicts what they will cost on this machine.")
    with gr.Row():
        with gr.Column(scale=3):
            ordered = [*studio.presets_for("advanced"), *studio.presets_for("intermediate"),
                       *studio.presets_for("beginner")]
            preset = gr.Dropdown([(p.label, p.name) for p in ordered], value=None, elem_id="adv-preset",
                                 label="Start from a preset (sets the model, size, length and steps; the cost line "
                                       "below follows)")
            with gr.Accordion("Presets: what each costs on this machine", open=False):
                gr.Markdown(presets_markdown(studio, "advanced"), elem_id="adv-preset-costs")
            f = _model_widgets(studio, key)
            size = gr.Dropdown(size_choices(get_spec(key)) + ["custom"], value=None, label="Size preset",
                               elem_id="adv-size")
            with gr.Accordion("Long clip (sliding windows, blended seams)", open=False):
                f["long_clip"] = gr.Checkbox(label="Make a long clip", value=False, elem_id="adv-long")
                with gr.Row():
                    f["total_seconds"] = gr.Number(label="Total length (s)", value=10, elem_id="adv-total-seconds")
                    f["overlap"] = gr.Number(label="Overlap frames (0 = automatic)", value=0, precision=0,
                                             elem_id="adv-overlap")
                f["window_prompts"] = gr.Textbox(label="One prompt per window (optional, one per line)", lines=3,
                                                 elem_id="adv-window-prompts")
            with gr.Accordion("LoRAs", open=False):
                lora_pick = gr.Dropdown(list_loras(studio.settings.loras_dir), value=None,
                                        label=f"Add a LoRA from {studio.settings.loras_dir}", elem_id="adv-lora-pick")
                f["loras"] = gr.Textbox(label="LoRAs, one per line: file.safetensors:weight[:low-noise expert weight]",
                                        lines=2, elem_id="adv-loras")
            with gr.Accordion("Fast: step-distilled recipe (4 steps, guidance 1; docs/FAST.md)", open=False):
                f["fast"] = gr.Dropdown(FAST_CHOICES, value="off", elem_id="adv-fast",
                                        label="Recipe (sets steps, shift and guidance; adds its distill LoRAs)")
                f["motion_steps"] = gr.Number(label="Motion steps: first steps on the base model with guidance "
                                              "(more motion, each costs two passes)", value=0, precision=0,
                                              elem_id="adv-motion-steps")
            with gr.Accordion("Step cache (trades quality for speed)", open=False):
                f["step_cache"] = gr.Radio(CACHE_CHOICES, value="off", label="Step cache", elem_id="adv-cache")
                f["cache_threshold"] = gr.Number(label="Threshold (0 = default)", value=0, elem_id="adv-threshold")
                calibrate = gr.Button("Calibrate MagCache on my weights", size="sm", elem_id="adv-calibrate")
            with gr.Accordion("More settings", open=False):
                for name in TABLE_FIELDS:
                    f[name] = table_widget(FIELDS[name])
            with gr.Accordion("Plan overrides (automatic unless set)", open=False):
                with gr.Row():
                    f["storage"] = gr.Dropdown(knobs["storage"], value=AUTO, label="Weight storage", elem_id="adv-storage")
                    f["offload"] = gr.Dropdown(knobs["offload"], value=AUTO, label="Offload", elem_id="adv-offload")
                    f["text_encoder"] = gr.Dropdown(knobs["text_encoder"], value=AUTO, label="Text encoder",
                                                    elem_id="adv-text-encoder")
                with gr.Row():
                    f["gpu"] = gr.Dropdown(gpu_choices(studio), value=AUTO, label="GPU", elem_id="adv-gpu")
                    f["attention"] = gr.Dropdown(knobs["attention"], value=AUTO, label="Attention", elem_id="adv-attention")
                    f["compile"] = gr.Radio([("automatic", AUTO), ("on", "on"), ("off", "off")], value=AUTO,
                                            label="torch.compile", elem_id="adv-compile")
                    f["decode"] = gr.Radio([("fp32 (automatic)", AUTO), ("bf16: faster, pixels differ slightly", "bf16")],
                                           value=AUTO, label="VAE decode", elem_id="adv-decode")
                first = form_of({n: f[n].value for n in FORM_FIELDS})
                automatic = gr.Markdown(automatic_text(studio, first), elem_id="adv-automatic")
            cost = gr.Markdown(cost_line(studio, first), elem_id="adv-cost")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="adv-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="adv-cancel")
            with gr.Accordion("Batch: several prompts × seeds into the queue", open=False):
                batch_prompts = gr.Textbox(label="Prompts, one per line", lines=4, elem_id="adv-batch-prompts")
                with gr.Row():
                    batch_seeds = gr.Number(label="Seeds per prompt", value=1, precision=0, elem_id="adv-batch-seeds")
                    batch_first_seed = gr.Number(label="First seed", value=0, precision=0, elem_id="adv-batch-first")
                batch_go = gr.Button("Queue batch", elem_id="adv-batch-go")
                batch_status = gr.Markdown("", elem_id="adv-batch-status")
            with gr.Accordion("Settings from a video made here", open=False, elem_id="adv-from-video"):
                settings_video = gr.File(label="Drop an mp4 made by Wan Studio", file_types=[".mp4"],
                                         type="filepath", elem_id="adv-settings-video")
                load_settings = gr.Button("Load these settings", size="sm", elem_id="adv-load-settings")
                load_status = gr.Markdown("", elem_id="adv-load-status")
            models_panel.listen(models_panel.render(studio), studio)
        with gr.Column(scale=2):
            video = gr.Video(label="Video", elem_id="adv-video", interactive=False, autoplay=True, loop=True)
            live = render_view("adv", {"job": "Video"})
            status = gr.Markdown("", elem_id="adv-status")
            file = gr.File(label="Download", elem_id="adv-file", interactive=False)
            params = gr.JSON(label="Parameters used", elem_id="adv-params")
    return AdvancedTab(f, size, lora_pick, cost, automatic, generate, cancel, calibrate, video, file, params, status,
                       batch_prompts, batch_seeds, batch_first_seed, batch_go, batch_status, preset, settings_video,
                       load_settings, load_status, live)


BATCH_INPUTS = ("prompts", "seeds", "first_seed")


def _owner(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def _wait(studio: Studio, job: Any, progress: gr.Progress) -> Any:
    """Follow a queued job to its end with the progress bar; the finished result, or raise."""
    def waiting(j: Any) -> None:
        if j.status in ("queued", "paused"):
            p = studio.queue.progress_of(j)
            progress(p.fraction, desc=p.message)

    job = studio.queue.wait(job.id, on_change=waiting, on_progress=lambda p: progress(p.fraction, desc=p.message))
    if job.status == "cancelled":
        raise GenerationCancelled(job.error or "cancelled")
    if job.status != "done":
        raise JobFailed(job.error or f"the job ended as {job.status}")
    return result_of(job.outputs)


def listen(tab: AdvancedTab, studio: Studio) -> None:
    """Wire the events; ``advanced_generate``, ``advanced_cost``, ``advanced_batch`` and
    ``advanced_calibrate`` are API endpoints with named parameters (``FORM_FIELDS``; the batch adds
    ``prompts``, ``seeds`` and ``first_seed``), each with an API default, so a script names what it
    sets. Positional calls in the old order keep working for this release."""

    def run_job(values: dict[str, Any], request: gr.Request | None, progress: gr.Progress,
                calibrate: bool) -> tuple[Any, ...]:
        form = form_of(values)
        try:
            req = build_request(form)
            if calibrate:
                if get_spec(req.model).is_demo:
                    raise RequestError("the demo models have random weights: MagCache ratios measured on them "
                                       "would mean nothing; pick a downloaded Wan2.2 model")
                req.step_cache, req.cache_threshold, req.total_frames = None, None, None
                req.window_overlap = req.window_prompts = None
            job = studio.submit(req, owner=_owner(request), user=getattr(request, "username", None),
                                extra={"calibrate_magcache": True} if calibrate else None)
            result = _wait(studio, job, progress)
        except RequestError as e:
            raise user_error(str(e), duration=None) from None
        except GenerationCancelled as e:
            return None, None, None, f"Cancelled ({e}). Finished windows of a long clip are kept for a retry."
        except JobFailed as e:
            raise user_error(f"The video could not be made: {e}", duration=None) from None
        sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
        clip = sidecar.get("long_clip")
        what = f"{clip['windows']} windows, " if clip else ""
        status = (f"Done in {result.timings.get('total_s', 0):.1f} s — seed {result.request.seed}, {what}"
                  f"{sidecar['video']['frames']} frames, {result.video_path.name}")
        if calibrate:
            status += f" · MagCache ratios stored in {sidecar['magcache_calibration']['file']}"
        return str(result.video_path), [str(result.video_path), str(result.sidecar_path)], sidecar, status

    def advanced_generate(values: dict[str, Any], request: gr.Request | None, progress: gr.Progress) -> tuple[Any, ...]:
        """Make one video from the Advanced form's fields (by name; any left out take the form's defaults)."""
        return run_job(values, request, progress, calibrate=False)

    def advanced_calibrate(values: dict[str, Any], request: gr.Request | None, progress: gr.Progress) -> tuple[Any, ...]:
        """Measure MagCache ratios on your weights with the form's settings, then store them."""
        return run_job(values, request, progress, calibrate=True)

    def advanced_cost(values: dict[str, Any], _request: Any, _progress: Any) -> tuple[str, str]:
        """The predicted cost of the form's settings and what the planner would pick."""
        form = form_of(values)
        return cost_line(studio, form), automatic_text(studio, form)

    def advanced_batch(values: dict[str, Any], request: gr.Request | None, _progress: Any) -> str:
        """Queue ``prompts`` (one per line) × ``seeds`` seeds from ``first_seed`` with the form's settings."""
        prompts, seeds, first = (values.pop(k) for k in BATCH_INPUTS)
        try:
            reqs, problems = batch_requests(form_of(values), prompts, int(seeds or 1), int(first or 0))
        except RequestError as e:
            raise user_error(str(e)) from None
        queued, lines = 0, [str(p) for p in problems]
        for r in reqs:
            try:
                studio.submit(r, owner=_owner(request), user=getattr(request, "username", None))
                queued += 1
            except RequestError as e:
                lines.append(f"{r.prompt[:40]!r} seed {r.seed}: {e}")
        text = f"Queued {queued} job{'s' if queued != 1 else ''} (see the Queue tab)."
        return text + (" Skipped: " + "; ".join(lines[:20]) if lines else "")

    def on_model(key: str) -> tuple[Any, ...]:
        spec = get_spec(key)
        placeholder, gloss = negative_prompt_help(spec)
        blank = model_blanks(key)
        return (*(gr.update(**blank[n]) for n in MODEL_NUMBERS),
                gr.update(choices=size_choices(spec) + ["custom"], value=None),
                gr.update(placeholder=placeholder, info=gloss))

    def on_size(choice: str | None) -> tuple[Any, Any]:
        if not choice or choice == "custom":
            return gr.update(), gr.update()
        w, h = (int(x) for x in choice.split("×"))
        return w, h

    def on_lora_pick(name: str | None, current: str) -> tuple[str, None]:
        if not name:
            return current, None
        lines = [line for line in (current or "").splitlines() if line.strip()]
        return "\n".join([*lines, f"{name}:1.0"]), None

    loaded_fields = [n for n in FORM_FIELDS if n not in FILE_FIELDS]

    def on_load_settings(video: str | None = None, request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Fill the form from the settings a dropped video was made with; why not, in words."""
        keep = tuple(gr.update() for _ in range(len(loaded_fields) + 1))
        if not video:
            return (*keep, "Drop an mp4 made by Wan Studio first.")
        caller = studio.caller(getattr(request, "username", None), _owner(request))
        try:
            record = studio.recorded_settings(Path(video), caller)
            values, notes = form_of_record(record.request, [d for _, d in gpu_choices(studio)])
        except (NoRecordedSettings, RequestError) as e:
            return (*keep, f"**Cannot load these settings:** {e}")
        spec = get_spec(values["model"])
        placeholder, gloss = negative_prompt_help(spec)
        where = "from the video itself" if record.source == "video" else f"from its sidecar {record.where.name}"
        text = f"Loaded the settings of {Path(video).name} {where} (seed {values['seed']})."
        if notes:
            text += " Note: " + "; ".join(notes) + "."
        values["negative_prompt"] = gr.update(value=values["negative_prompt"], placeholder=placeholder, info=gloss)
        return (*(values[n] for n in loaded_fields), gr.update(choices=size_choices(spec) + ["custom"], value=None),
                text)

    def on_preset(name: str | None) -> tuple[Any, ...]:
        if not name or name not in studio.presets:
            return tuple(gr.update() for _ in range(len(PRESET_FORM_FIELDS) + 2))
        values = form_of_preset(studio.presets[name])
        spec = get_spec(values["model"])
        placeholder, gloss = negative_prompt_help(spec)
        return (*(values[n] for n in PRESET_FORM_FIELDS), gr.update(choices=size_choices(spec) + ["custom"], value=None),
                gr.update(placeholder=placeholder, info=gloss))

    f = tab.form
    outputs = [tab.video, tab.file, tab.params, tab.status]
    # One release ago the batch endpoint took the form's hand-laid fields, then its three own inputs,
    # by position; that order is kept, and fields of the table come last.
    batch_names = [*HAND_FIELDS, *BATCH_INPUTS, *TABLE_FIELDS]
    batch_widgets = {"prompts": tab.batch_prompts, "seeds": tab.batch_seeds, "first_seed": tab.batch_first_seed}
    # The job's progress is drawn once, beside its preview (``ui.live``); a refusal marks the status
    # line alone, not all four outputs.
    quiet: dict[str, Any] = dict(show_progress="minimal", show_progress_on=[tab.status])
    arm(tab.live, tab.generate)
    arm(tab.live, tab.calibrate)
    made = tab.generate.click(named(advanced_generate, FORM_FIELDS), inputs=tab.inputs, outputs=outputs,
                              api_name="advanced_generate", concurrency_limit=4, concurrency_id="advanced", **quiet)
    calibrated = tab.calibrate.click(named(advanced_calibrate, FORM_FIELDS), inputs=tab.inputs, outputs=outputs,
                                     api_name="advanced_calibrate", concurrency_limit=1,
                                     concurrency_id="advanced-calibrate", **quiet)
    follow(tab.live, studio, made)
    follow(tab.live, studio, calibrated, timer_wired=True)
    def on_cancel(request: gr.Request) -> str:
        return "Cancelling after the current step…" if studio.cancel(_owner(request)) else "Nothing is running."

    tab.cancel.click(on_cancel, outputs=[tab.status], api_name=False, queue=False)
    tab.batch_go.click(named(advanced_batch, batch_names),
                       inputs=[batch_widgets[n] if n in batch_widgets else f[n] for n in batch_names],
                       outputs=[tab.batch_status], api_name="advanced_batch")
    # On user input only: loading a video's settings sets the model and its own sizes together.
    f["model"].input(on_model, inputs=[f["model"]],
                     outputs=[*(f[n] for n in MODEL_NUMBERS), tab.size, f["negative_prompt"]], api_name=False,
                     queue=False)
    tab.preset.input(on_preset, inputs=[tab.preset],
                     outputs=[*(f[n] for n in PRESET_FORM_FIELDS), tab.size, f["negative_prompt"]], api_name=False,
                     queue=False)
    tab.load_settings.click(on_load_settings, inputs=[tab.settings_video],
                            outputs=[*(f[n] for n in loaded_fields), tab.size, tab.load_status],
                            api_name="advanced_load_settings", queue=False)
    tab.size.change(on_size, inputs=[tab.size], outputs=[f["width"], f["height"]], api_name=False, queue=False)
    tab.lora_pick.change(on_lora_pick, inputs=[tab.lora_pick, f["loras"]], outputs=[f["loras"], tab.lora_pick],
                         api_name=False, queue=False)
    # The cost line follows every field that changes the plan, the time or whether Generate can run
    # (the prompt too: an empty one is said there before Generate); only the seed changes nothing.
    watched = [f[n] for n in FORM_FIELDS if n != "seed"]
    gr.on([w.change for w in watched], named(advanced_cost, FORM_FIELDS, special=False), inputs=tab.inputs, outputs=[tab.cost, tab.automatic],
          api_name="advanced_cost", queue=False)


def validate_form(studio: Studio, form: AdvancedForm) -> None:
    """Raise ``RequestError`` when the form's request would be refused (used by tests and the API)."""
    validate(build_request(form), studio.settings.max_prompt_chars)
