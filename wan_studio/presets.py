"""Presets: named sets of request fields, loaded from ``presets/*.json`` and validated at start.

One preset per workflow row of the plan the app was made from (``workflow``: the tab it belongs
to): Beginner (TI2V-5B 720p 5 s, the demo, the fast recipes), Intermediate (TI2V-5B 720p 10 s and
1080p 5 s scenes, S2V-14B 1024×704 talking clips) and Advanced (A14B 480p and 720p, a 20 s long
clip, TI2V-5B 1080p 10 s). A preset file that does not validate is left out and named in words;
the app starts with the others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_studio.catalog.specs import get_spec
from wan_studio.engine.request import PRESET, GenerationRequest, RequestError, fields_on, validate

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
PRESET_FIELDS = fields_on(PRESET)  # the field table's ``preset`` column
WORKFLOWS = ("beginner", "intermediate", "advanced")


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
    if preset.workflow not in WORKFLOWS:
        raise PresetError(f"preset {path.name}: 'workflow' must be one of {', '.join(WORKFLOWS)}, "
                          f"found {preset.workflow!r}")
    try:
        checked_request(preset)
    except (RequestError, KeyError) as e:
        raise PresetError(f"preset {path.name}: {e.args[0] if isinstance(e, KeyError) else e}") from None
    return preset


@contextmanager
def stand_in_inputs() -> Iterator[dict[str, str]]:
    """A start image (512×512 PNG) and 2 s of speech (WAV) for checking and planning presets of
    models that need them: the user brings the real ones, only the preset's own fields are judged."""
    import numpy as np
    from PIL import Image

    from wan_studio.engine.s2v.audio_io import SAMPLE_RATE, write_wav

    with tempfile.TemporaryDirectory(prefix="wan-preset-check-") as folder:
        image = Path(folder) / "portrait.png"
        Image.fromarray(np.full((512, 512, 3), 128, np.uint8)).save(image)
        t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
        audio = write_wav(Path(folder) / "speech.wav", 0.3 * np.sin(2 * np.pi * 180 * t))
        yield {"image": str(image), "audio": str(audio)}


def checked_request(preset: Preset, inputs: dict[str, str] | None = None) -> GenerationRequest:
    """The validated request of ``preset`` (prompt "preset check", seed 0), with stand-in files
    (``inputs``, else made here) where its model needs a start image or speech."""
    spec = get_spec(preset.fields["model"])
    if not (spec.requires_image or spec.requires_audio):
        return validate(preset.request("preset check", seed=0))
    if inputs is None:
        with stand_in_inputs() as made:
            return checked_request(preset, made)
    files = {"image": inputs["image"]} if spec.requires_image else {}
    if spec.requires_audio:
        files["audio"] = inputs["audio"]
    return validate(preset.request("preset check", seed=0, **files))


def read_presets(folder: Path = PRESETS_DIR) -> tuple[dict[str, Preset], list[str]]:
    """Every valid preset in ``folder`` by name, and one sentence per file left out."""
    presets: dict[str, Preset] = {}
    problems: list[str] = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            p = parse_preset(path)
        except PresetError as e:
            problems.append(f"{e}; it is left out, the other presets work")
            continue
        presets[p.name] = p
    return presets, problems


def load_presets(folder: Path = PRESETS_DIR) -> dict[str, Preset]:
    """Every valid preset in ``folder`` by name; each bad file is logged, naming it and its problem.
    Raises ``PresetError`` only when no preset at all is usable."""
    presets, problems = read_presets(folder)
    for problem in problems:
        log.warning("%s", problem)
    if not presets:
        raise PresetError(f"no usable presets in {folder}" + (f": {'; '.join(problems)}" if problems else ""))
    return presets


def as_dict(preset: Preset) -> dict[str, Any]:
    """JSON-able view of a preset."""
    return dataclasses.asdict(preset)
