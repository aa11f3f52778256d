"""The Advanced tab's "Models on this machine" panel: what every model has on disk, and a
ComfyUI ``models`` folder to check before starting the app with ``--comfyui-dir``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from wan_studio.catalog import loading
from wan_studio.catalog.specs import CATALOG
from wan_studio.services import Studio


@dataclass
class ModelsPanel:
    """Widgets of the panel."""

    folder: gr.Textbox
    scan: gr.Button
    report: gr.Markdown


def models_report(studio: Studio, comfyui_dir: Path | None) -> str:
    """One line per real model: its status and what was found (files and sizes), missing or wrong."""
    lines = []
    for spec in CATALOG.values():
        if spec.is_demo:
            continue
        a = loading.availability(spec, studio.settings.models_dir, comfyui_dir)
        lines.append(f"- **{spec.title}** — {a.status}: {a.detail}")
    return "\n".join(lines)


def scan_text(studio: Studio, text: str, user: str | None) -> str:
    """The report for the folder typed in ``text`` (blank: the folders in use), for an admin only:
    it reads the server's disk."""
    if not studio.is_admin(user):
        return "Only an admin can look at the server's folders."
    in_use = studio.settings.comfyui_dir
    folder = Path(text.strip()).expanduser() if text and text.strip() else in_use
    if folder is not None and not folder.is_dir():
        return f"{folder} is not a folder on this machine."
    head = ""
    if folder is not None and folder != in_use:
        head = (f"*Checked only: to run models from this folder, start the app with* "
                f"`python app.py --comfyui-dir {folder}`\n\n")
    return head + models_report(studio, folder)


def render(studio: Studio) -> ModelsPanel:
    """Lay out the panel (inside the Advanced tab's left column)."""
    with gr.Accordion("Models on this machine (Diffusers folders, ComfyUI files)", open=False,
                      elem_id="adv-models"):
        in_use = studio.settings.comfyui_dir
        folder = gr.Textbox(value=str(in_use) if in_use else "", elem_id="adv-comfyui-dir",
                            label="ComfyUI models folder (diffusion_models/, text_encoders/, vae/, loras/)",
                            placeholder="e.g. ~/ComfyUI/models")
        scan = gr.Button("Check this folder", size="sm", elem_id="adv-comfyui-scan")
        report = gr.Markdown("", elem_id="adv-models-report")
    return ModelsPanel(folder, scan, report)


def listen(panel: ModelsPanel, studio: Studio) -> None:
    """Wire the check button."""
    def check(text: str, request: gr.Request | None = None) -> str:
        return scan_text(studio, text, getattr(request, "username", None))

    panel.scan.click(check, [panel.folder], [panel.report], api_name=False)
