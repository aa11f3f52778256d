"""Presets: named sets of request fields, loaded from ``presets/*.json`` and validated at start."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_studio.engine.request import GenerationRequest, RequestError, validate

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
PRESET_FIELDS = ("model", "width", "height", "num_frames", "fps", "steps", "guidance", "guidance_2", "shift",
                 "fast", "motion_steps")


class PresetError(ValueError):
    """A preset file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Preset:
    """A named starting point for a request. ``workflow`` is the tab it belongs to."""

    name: str
    label: str
    workflow: str
    description: str
    fields: dict[str, Any]

    def request(self, prompt: str, **overrides: Any) -> GenerationRequest:
        """A request with this preset's fields, then ``overrides`` (``None`` values ignored)."""
        data = {**self.fields, **{k: v for k, v in overrides.items() if v is not None}}
        return GenerationRequest(prompt=prompt, preset=self.name, **data)


def parse_preset(path: Path) -> Preset:
    """Read and validate one preset file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PresetError(f"preset {path.name}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset {path.name}: expected a JSON object")
    meta = {k: data.pop(k, None) for k in ("name", "label", "workflow", "description")}
    if meta["name"] != path.stem:
        raise PresetError(f"preset {path.name}: 'name' must be {path.stem!r}, found {meta['name']!r}")
    unknown = sorted(set(data) - set(PRESET_FIELDS))
    if unknown:
        raise PresetError(f"preset {path.name}: unknown field(s) {', '.join(unknown)}")
    if "model" not in data:
        raise PresetError(f"preset {path.name}: 'model' is required")
    preset = Preset(meta["name"], meta["label"] or meta["name"], meta["workflow"] or "beginner",
                    meta["description"] or "", data)
    try:
        validate(preset.request("preset check", seed=0))
    except RequestError as e:
        raise PresetError(f"preset {path.name}: {e}") from None
    return preset


def load_presets(folder: Path = PRESETS_DIR) -> dict[str, Preset]:
    """Every preset in ``folder`` by name; a bad file stops the app with a message naming it."""
    presets = {}
    for path in sorted(Path(folder).glob("*.json")):
        p = parse_preset(path)
        presets[p.name] = p
    if not presets:
        raise PresetError(f"no presets found in {folder}")
    return presets


def as_dict(preset: Preset) -> dict[str, Any]:
    """JSON-able view of a preset."""
    return dataclasses.asdict(preset)
