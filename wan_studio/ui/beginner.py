"""Beginner tab: TI2V-5B on one GPU, 720p, 5 s — prompt, optional image, preset, seed, Generate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.generate import GenerationCancelled
from wan_studio.engine.request import RequestError
from wan_studio.ui.safe_inputs import ImageInput
from wan_studio.services import JobFailed, Studio
from wan_studio.ui.errors import user_error
from wan_studio.ui.live import LiveView, arm, follow, render_view
from wan_studio.ui.preset_costs import presets_markdown


@dataclass
class BeginnerTab:
    """Widgets of the tab, kept so ``listen`` can wire them."""

    prompt: gr.Textbox
    image: gr.Image
    preset: gr.Dropdown
    seed: gr.Number
    generate: gr.Button
    cancel: gr.Button
    model_status: gr.Markdown
    video: gr.Video
    file: gr.File
    params: gr.JSON
    status: gr.Markdown
    plan: gr.Markdown
    unload: gr.Button
    unload_status: gr.Markdown
    live: LiveView


def model_status_text(studio: Studio, preset_name: str) -> str:
    """Markdown line saying which model the preset uses and whether it is ready."""
    preset = studio.presets[preset_name]
    spec = get_spec(preset.fields["model"])
    avail = studio.availability(spec)
    if spec.is_demo:
        return f"**{spec.title}** — built in. {preset.description}"
    if not avail.usable:
        return f"**{spec.title}** — {avail.status}. {avail.detail}"
    missing = fast_files_text(studio, preset.fields.get("fast"))
    return f"**{spec.title}** — ready{missing}. {preset.description}"


def fast_files_text(studio: Studio, recipe_key: str | None) -> str:
    """``, but its distill LoRAs are not downloaded (…command…)`` for a fast preset missing them, else ``""``."""
    from wan_studio.engine.distill import RECIPES

    recipe = RECIPES.get(recipe_key or "")
    if recipe is None or not recipe.missing(studio.settings.loras_dir):
        return ""
    return f", but its distill LoRAs are not downloaded; fetch them with: `{recipe.download_command(studio.settings.loras_dir)}`"


def plan_text(sidecar: dict[str, Any]) -> str:
    """Markdown: the memory plan a job ran with, predicted vs actual peak VRAM, and why."""
    plan = sidecar.get("plan")
    if not plan:
        return ""
    predicted = max(plan["peak_vram_gib"].values(), default=0.0)
    actual = sidecar.get("peak_vram_gib")
    actual_text = f"{actual:.1f} GiB" if actual is not None else "n/a (no GPU)"
    retries = sidecar.get("plan_retries", 0)
    retry_text = f" Retried {retries}× after running out of memory." if retries else ""
    return (f"**Memory plan:** {plan['label']} — peak VRAM predicted {predicted:.1f} GiB, "
            f"actual {actual_text}.{retry_text}  \n*Why:* {plan['why']}")


def render(studio: Studio) -> BeginnerTab:
    """Lay out the tab; call inside a ``gr.Tab``."""
    presets = studio.presets_for("beginner")
    default = studio.default_preset("beginner")
    gr.Markdown(
        "Type what should happen, optionally add a start image, press **Generate**. "
        "The 720p preset uses Wan2.2 TI2V-5B on one GPU; the demo preset runs anywhere in seconds."
    )
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=4, elem_id="beginner-prompt",
                                placeholder="A red fox trots through fresh snow at sunrise, cinematic")
            image = ImageInput(label="Start image (optional)", type="filepath", sources=["upload"],
                             elem_id="beginner-image")
            preset = gr.Dropdown(choices=[(p.label, p.name) for p in presets], value=default.name,
                                 label="Preset", elem_id="beginner-preset")
            model_status = gr.Markdown(model_status_text(studio, default.name), elem_id="beginner-model-status")
            with gr.Accordion("Presets: what each costs on this machine", open=False):
                gr.Markdown(presets_markdown(studio, "beginner"), elem_id="beginner-preset-costs")
            seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="beginner-seed")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="beginner-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="beginner-cancel")
        with gr.Column(scale=1):
            video = gr.Video(label="Video", elem_id="beginner-video", interactive=False, autoplay=True, loop=True)
            live = render_view("beginner", {"job": "Video"})
            status = gr.Markdown("", elem_id="beginner-status")
            file = gr.File(label="Download", elem_id="beginner-file", interactive=False)
            plan = gr.Markdown("", elem_id="beginner-plan")
            params = gr.JSON(label="Parameters used", elem_id="beginner-params")
            with gr.Row():
                unload = gr.Button("Unload models", size="sm", elem_id="beginner-unload")
                unload_status = gr.Markdown("", elem_id="beginner-unload-status")
    return BeginnerTab(prompt, image, preset, seed, generate, cancel, model_status, video, file, params, status,
                       plan, unload, unload_status, live)


def listen(tab: BeginnerTab, studio: Studio) -> None:
    """Wire the events; ``generate`` is also the public ``/generate`` API endpoint."""

    def on_generate(prompt: str, image: str | None = None, preset: str = "demo-fast", seed: float | None = -1,
                    request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Make one video from a prompt, an optional start image, a preset and a seed (-1: random)."""
        chosen = studio.presets.get(preset)
        if chosen is None:
            raise user_error(f"unknown preset {preset!r}; choose one of {', '.join(studio.presets)}")
        seed_value = None if seed is None or seed < 0 else int(seed)
        req = chosen.request(prompt, image=image or None, seed=seed_value)
        owner = getattr(request, "session_hash", None) or "api"
        for warning in studio.vram_warnings(req):  # a warning, not a refusal: the plan may still fit
            gr.Warning(warning, duration=None)
        try:
            result = studio.run(req, owner=owner, on_progress=lambda p: progress(p.fraction, desc=p.message),
                                user=getattr(request, "username", None))
        except RequestError as e:
            raise user_error(str(e), duration=None) from None
        except GenerationCancelled as e:
            return None, None, None, f"Cancelled ({e}). Nothing was saved."
        except FileNotFoundError as e:  # model folder damaged between check and load
            raise user_error(str(e), duration=None) from None
        except JobFailed as e:  # the worker's reason, e.g. the disk is full
            raise user_error(f"The video could not be made: {e}", duration=None) from None
        sidecar = json.loads(result.sidecar_path.read_text(encoding="utf-8"))
        t = result.timings
        status = (f"Done in {t['total_s']:.1f} s — seed {result.request.seed}, "
                  f"{sidecar['video']['frames']} frames, {result.video_path.name}")
        return str(result.video_path), [str(result.video_path), str(result.sidecar_path)], sidecar, status

    def on_cancel(request: gr.Request) -> str:
        owner = getattr(request, "session_hash", None) or "api"
        if studio.cancel(owner):
            return "Cancelling after the current step…"
        return "Nothing is running."

    # The job's progress is drawn once, beside its preview (``ui.live``); the status line only says
    # that the call is still going.
    arm(tab.live, tab.generate)
    event = tab.generate.click(
        on_generate,
        inputs=[tab.prompt, tab.image, tab.preset, tab.seed],
        outputs=[tab.video, tab.file, tab.params, tab.status],
        api_name="generate",
        concurrency_limit=1,
        concurrency_id="gpu",
        show_progress="minimal",
        show_progress_on=[tab.status],
    )
    event.then(lambda sidecar: plan_text(sidecar or {}), inputs=[tab.params], outputs=[tab.plan],
               api_name=False, queue=False)
    follow(tab.live, studio, event)
    tab.cancel.click(on_cancel, outputs=[tab.status], api_name="cancel", queue=False)
    def on_unload(request: gr.Request) -> str:
        return studio.unload_models(user=getattr(request, "username", None))

    tab.unload.click(on_unload, outputs=[tab.unload_status], api_name="unload_models",
                     concurrency_limit=1, concurrency_id="gpu")
    tab.preset.change(lambda name: model_status_text(studio, name), inputs=[tab.preset],
                      outputs=[tab.model_status], api_name=False, queue=False)
