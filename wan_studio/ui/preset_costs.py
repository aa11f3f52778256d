"""Every preset of a tab with what it would cost on this machine (the planner's plan for it, as the
Advanced tab's cost line words it), and whether its model is here."""

from __future__ import annotations

from typing import Any

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.request import RequestError
from wan_studio.presets import Preset, checked_request, stand_in_inputs
from wan_studio.services import Studio
from wan_studio.ui.advanced_form import cost_text, form_of_record, windows_of

# The form fields a preset sets when it is picked in the Advanced tab; the prompt, seed, images,
# LoRAs and plan pins the user typed stay as they are.
PRESET_FORM_FIELDS = ("model", "width", "height", "frames", "fps", "steps", "shift", "guidance", "guidance_2",
                      "long_clip", "total_seconds", "overlap", "fast", "motion_steps")


def preset_cost(studio: Studio, preset: Preset, inputs: dict[str, str] | None = None) -> str:
    """One Markdown line: the preset's label, its model's status when not usable, and its cost."""
    spec = get_spec(preset.fields["model"])
    avail = studio.availability(spec)
    status = "" if avail.usable else f" — *{spec.title.split(' (')[0]} is {avail.status}*"
    try:
        r = checked_request(preset, inputs)
        cost = cost_text(studio.plans(r)[0], r, windows_of(r)).replace("**This will cost:** ", "", 1)
    except RequestError as e:
        cost = f"cannot run on this machine: {e}"
    per = " (per 5 s chunk of speech; the clip lasts as long as the speech)" if spec.task == "s2v" else ""
    return f"- **{preset.label}** (`{preset.name}`){status}: {cost}{per}"


def presets_markdown(studio: Studio, workflow: str) -> str:
    """Markdown list of ``workflow``'s presets, each with its predicted cost on this machine."""
    presets = studio.presets_for(workflow)
    if not presets:
        return "No presets for this tab."
    with stand_in_inputs() as inputs:
        lines = [preset_cost(studio, p, inputs) for p in presets]
    return "Predicted on this machine (peak VRAM, host RAM, denoising time):\n\n" + "\n".join(lines)


def form_of_preset(preset: Preset) -> dict[str, Any]:
    """The Advanced form values ``PRESET_FORM_FIELDS`` take when ``preset`` is picked (its fields,
    the model's defaults for the rest)."""
    values, _notes = form_of_record(preset.request("").resolved().to_dict())
    return {k: values[k] for k in PRESET_FORM_FIELDS}
