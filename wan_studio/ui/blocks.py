"""Composes the tabs into one ``gr.Blocks`` app and registers the named API endpoints."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from wan_studio.services import Studio
from wan_studio.ui import advanced, beginner, gpu_panel, intermediate, jobs_api, queue_tab
from wan_studio.ui.guard import guard_app_kwargs

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
CSS_PATH = ASSETS / "style.css"


def build_app(studio: Studio) -> gr.Blocks:
    """The whole UI for ``studio``; launch it with ``launch_kwargs(studio)``."""
    with gr.Blocks(title="Wan Studio") as app:
        gr.Markdown("# Wan Studio\nWan2.2 video models on your own GPUs.", elem_id="title")
        if studio.notices:  # e.g. the job list was damaged and rebuilt from the sidecars
            gr.Markdown("\n".join(f"> **Note:** {n}" for n in studio.notices), elem_id="store-notice")
        gpus = gpu_panel.render(studio)  # above the tabs, so every tab shows it
        with gr.Tabs():
            with gr.Tab("Beginner", id="beginner") as beginner_page:
                tab = beginner.render(studio)
            with gr.Tab("Intermediate", id="intermediate") as intermediate_page:
                inter_tab = intermediate.render(studio)
            with gr.Tab("Advanced", id="advanced") as advanced_page:
                adv_tab = advanced.render(studio)
            with gr.Tab("Queue", id="queue") as queue_page:
                qtab = queue_tab.render(studio)
        queue_tab.poll_while_shown(qtab, queue_page, [beginner_page, intermediate_page, advanced_page])
        beginner.listen(tab, studio)
        intermediate.listen(inter_tab, studio)
        advanced.listen(adv_tab, studio)
        queue_tab.listen(qtab, studio)
        gpu_panel.listen(gpus, studio)
        jobs_api.register(studio)
    app.queue(default_concurrency_limit=4)
    return app


def launch_kwargs(studio: Studio) -> dict[str, object]:
    """Arguments for ``Blocks.launch`` common to the CLI and the tests."""
    return {
        # Gradio copies a finished video from here into its cache to play it; ``ui.guard`` decides
        # what of this folder the file route itself may hand out.
        "allowed_paths": [str(studio.settings.outputs_dir.resolve())],
        "max_file_size": f"{studio.settings.max_upload_mb}mb",
        "css_paths": [CSS_PATH] if CSS_PATH.exists() else None,
        # Under the outputs folder only finished videos of the caller's jobs; API bodies checked.
        "app_kwargs": guard_app_kwargs(studio),
    }
