"""Intermediate tab: a scene clip from TI2V-5B plus a talking clip from S2V-14B (portrait + speech),
optionally joined into one video with the speech in place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.generate import GenerationCancelled, Progress
from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.services import JobFailed, Studio
from wan_studio.ui.safe_inputs import AudioInput, ImageInput
from wan_studio.ui.errors import user_error
from wan_studio.ui.live import LiveView, arm, follow, render_view
from wan_studio.ui.preset_costs import presets_markdown

# Mode -> (scene model and size/frames, talking model and pixel budget), as the Intermediate
# presets set them (a test keeps the two in step). 241 frames at 24 fps is the 10-second scene; the
# talking clip's length follows the speech (chunks of 5 s) within S2V's official 1024×704 budget.
MODES: dict[str, dict[str, Any]] = {
    "720p · 10 s (TI2V-5B + S2V-14B)": {
        "scene": dict(model="ti2v-5b", width=1280, height=704, num_frames=241),
        "talk": dict(model="s2v-14b", width=1024, height=704),
    },
    "1080p · 5 s (TI2V-5B + S2V-14B)": {
        "scene": dict(model="ti2v-5b", width=1920, height=1088, num_frames=121),
        "talk": dict(model="s2v-14b", width=1024, height=704),
    },
    "Demo · CPU, random weights": {
        "scene": dict(model="demo"),
        "talk": dict(model="demo-s2v"),
    },
}


LABELS = {"scene": "scene", "talk": "talking"}


@dataclass
class IntermediateTab:
    """Widgets of the tab, kept so ``listen`` can wire them."""

    mode: gr.Dropdown
    scene_prompt: gr.Textbox
    scene_image: gr.Image
    portrait: gr.Image
    speech: gr.Audio
    talk_prompt: gr.Textbox
    join: gr.Checkbox
    seed: gr.Number
    generate: gr.Button
    cancel: gr.Button
    scene_video: gr.Video
    talk_video: gr.Video
    joined_video: gr.Video
    params: gr.JSON
    status: gr.Markdown
    live: LiveView


def default_mode(studio: Studio) -> str:
    """The real mode when both of its models are ready, else the demo."""
    real = next(iter(MODES))
    ready = all(studio.availability(get_spec(MODES[real][p]["model"])).usable for p in ("scene", "talk"))
    return real if ready else list(MODES)[-1]


def build_requests(mode: str, scene_prompt: str, scene_image: str | None, portrait: str | None,
                   speech: str | None, talk_prompt: str, seed: int | None) -> tuple[GenerationRequest, GenerationRequest]:
    """The two requests of one intermediate job; the talking prompt falls back to the scene's."""
    if mode not in MODES:
        raise RequestError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    m = MODES[mode]
    scene = GenerationRequest(prompt=scene_prompt, image=scene_image or None, seed=seed, **m["scene"])
    talk = GenerationRequest(prompt=(talk_prompt or "").strip() or scene_prompt, image=portrait or None,
                             audio=speech or None, seed=seed, **m["talk"])
    return scene, talk


def render(studio: Studio) -> IntermediateTab:
    """Lay out the tab; call inside a ``gr.Tab``."""
    gr.Markdown("Make a scene, then let a person speak your audio; join both into one video if you like. "
                "The talking clip lasts as long as the speech (up to 60 s). With two GPUs both clips are made "
                "at the same time, one model per GPU.")
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Dropdown(choices=list(MODES), value=default_mode(studio), label="Models",
                               elem_id="inter-mode")
            scene_prompt = gr.Textbox(label="Scene prompt", lines=3, elem_id="inter-scene-prompt",
                                      placeholder="A quiet library at dusk, warm lamps, slow dolly forward")
            scene_image = ImageInput(label="Scene start image (optional)", type="filepath", sources=["upload"],
                                   elem_id="inter-scene-image")
            portrait = ImageInput(label="Portrait (face or upper body)", type="filepath", sources=["upload"],
                                elem_id="inter-portrait")
            speech = AudioInput(label="Speech (WAV, MP3, FLAC or M4A)", type="filepath", sources=["upload"],
                              elem_id="inter-speech")
            talk_prompt = gr.Textbox(label="Talking clip prompt (optional)", lines=2, elem_id="inter-talk-prompt",
                                     placeholder="A librarian speaks calmly to the camera")
            with gr.Accordion("Presets: what each costs on this machine", open=False):
                gr.Markdown(presets_markdown(studio, "intermediate"), elem_id="inter-preset-costs")
            join = gr.Checkbox(label="Join scene and talking clip", value=True, elem_id="inter-join")
            seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="inter-seed")
            with gr.Row():
                generate = gr.Button("Generate both", variant="primary", elem_id="inter-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="inter-cancel")
        with gr.Column(scale=1):
            joined_video = gr.Video(label="Joined", elem_id="inter-joined", interactive=False)
            with gr.Row():
                scene_video = gr.Video(label="Scene", elem_id="inter-scene", interactive=False)
                talk_video = gr.Video(label="Talking", elem_id="inter-talk", interactive=False)
            # One preview and one progress display per clip: the two may run at once, one per GPU.
            live = render_view("inter", {"scene": "Scene", "talk": "Talking"})
            status = gr.Markdown("", elem_id="inter-status")
            params = gr.JSON(label="Parameters used", elem_id="inter-params")
    return IntermediateTab(mode, scene_prompt, scene_image, portrait, speech, talk_prompt, join, seed, generate,
                           cancel, scene_video, talk_video, joined_video, params, status, live)


def scene_and_talk(jobs: list[Any]) -> dict[str, Any]:
    """The tab's live jobs by part: the speech-to-video one is the talking clip, the other the scene."""
    parts: dict[str, Any] = {}
    for job in jobs:
        part = "talk" if get_spec(job.request.get("model", "demo")).task == "s2v" else "scene"
        parts.setdefault(part, job)
    return parts


def listen(tab: IntermediateTab, studio: Studio) -> None:
    """Wire the events; ``generate`` is also the public ``/intermediate`` API endpoint."""

    def on_generate(mode: str, scene_prompt: str, scene_image: str | None = None, portrait: str | None = None,
                    speech: str | None = None, talk_prompt: str | None = None, join: bool = True, seed: float | None = -1,
                    request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # type: ignore[assignment]
        """A scene clip and a talking clip (portrait + speech), joined into one video if ``join``."""
        seed_value = None if seed is None or seed < 0 else int(seed)
        owner = getattr(request, "session_hash", None) or "api"

        parts: dict[str, Progress] = {}

        def report(part: str, p: Progress) -> None:
            # For API clients: one figure for the call. The tab draws each clip's own bar (``ui.live``).
            parts[part] = p
            fraction = sum(q.fraction for q in parts.values()) / 2
            progress(fraction, desc=" · ".join(f"{label}: {parts[k].message}" for k, label in LABELS.items() if k in parts))

        try:
            scene, talk = build_requests(mode, scene_prompt, scene_image, portrait, speech, talk_prompt, seed_value)
            result = studio.run_scene_and_talk(scene, talk, bool(join), owner=owner, on_progress=report,
                                               user=getattr(request, "username", None))
        except RequestError as e:
            raise user_error(str(e), duration=None) from None
        except GenerationCancelled as e:
            return None, None, None, None, f"Cancelled ({e})."
        except (FileNotFoundError, JobFailed) as e:  # JobFailed: the worker's reason, e.g. the disk is full
            raise user_error(str(e), duration=None) from None
        params = {part: json.loads(r.sidecar_path.read_text(encoding="utf-8"))
                  for part, r in (("scene", result.scene), ("talk", result.talk))}
        joined = str(result.joined) if result.joined else None
        status = f"Done — scene {result.scene.video_path.name}, talking {result.talk.video_path.name}"
        return joined, str(result.scene.video_path), str(result.talk.video_path), params, status

    def on_cancel(request: gr.Request) -> str:
        owner = getattr(request, "session_hash", None) or "api"
        return "Cancelling after the current step…" if studio.cancel(owner) else "Nothing is running."

    arm(tab.live, tab.generate)
    event = tab.generate.click(
        on_generate,
        inputs=[tab.mode, tab.scene_prompt, tab.scene_image, tab.portrait, tab.speech, tab.talk_prompt, tab.join,
                tab.seed],
        outputs=[tab.joined_video, tab.scene_video, tab.talk_video, tab.params, tab.status],
        api_name="intermediate",
        concurrency_limit=1,
        concurrency_id="gpu",
        # Not one bar over all five outputs: each clip's progress is drawn beside its own preview.
        show_progress="minimal",
        show_progress_on=[tab.status],
    )
    follow(tab.live, studio, event, assign=scene_and_talk)
    tab.cancel.click(on_cancel, outputs=[tab.status], api_name="intermediate_cancel", queue=False)
