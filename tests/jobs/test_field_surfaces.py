"""Every field of the request table reaches the request from every surface that shows it: batch
files, presets, the API's settings and the Advanced tab's form. Each test runs over the table, so
a field added there is carried here too (with its sample in ``tests/fields.py``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from wan_studio.engine.request import ADVANCED, API, BATCH, FIELDS, PRESET
from wan_studio.jobs.batch import plan_batch, read_rows
from wan_studio.presets import load_presets, parse_preset
from tests.fields import fields_of, files, samples


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, str]:
    return files(tmp_path_factory.mktemp("surfaces"))


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@pytest.mark.parametrize("name", fields_of(BATCH))
def test_a_batch_column_reaches_the_request(made, name: str) -> None:
    row = {"prompt": "a kite", **{k: v for k, v in samples(made)[name].items() if k in fields_of(BATCH)}}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(row))
    writer.writeheader()
    writer.writerow({k: _cell(v) for k, v in row.items()})
    rows, problems = read_rows(text.getvalue(), "csv")
    plan = plan_batch(rows, load_presets(), "demo-fast")
    assert not problems and not plan.problems, plan.summary()
    assert getattr(plan.requests[0], name) == row[name]


@pytest.mark.parametrize("name", fields_of(PRESET))
def test_a_preset_field_reaches_the_request(made, tmp_path: Path, name: str) -> None:
    fields = {"model": "demo", **{k: v for k, v in samples(made)[name].items() if k in fields_of(PRESET)}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", **fields}))
    assert getattr(parse_preset(path).request("a kite"), name) == fields[name]


@pytest.mark.parametrize("name", fields_of(API))
def test_an_api_setting_reaches_the_request(studio, made, name: str) -> None:
    from wan_studio.ui.jobs_api import API_FIELDS, api_request

    settings = {k: v for k, v in samples(made)[name].items() if k in API_FIELDS}
    req, _ = api_request(studio, "a kite", "demo-fast", 5, json.dumps(settings))
    assert getattr(req, name) == settings[name]


# The Advanced form's hand-laid widgets: how each request field is set there, and what it becomes.
FORM_CHANGES: dict[str, tuple[dict[str, Any], Any]] = {
    "prompt": ({"prompt": "a kite"}, "a kite"),
    "model": ({"model": "ti2v-5b"}, "ti2v-5b"),
    "image": ({"image": "IMAGE"}, "IMAGE"),
    "negative_prompt": ({"negative_prompt": "blurry"}, "blurry"),
    "width": ({"width": 320.0}, 320),
    "height": ({"height": 320.0}, 320),
    "num_frames": ({"frames": 21.0}, 21),
    "fps": ({"fps": 12.0}, 12),
    "steps": ({"steps": 3.0}, 3),
    "guidance": ({"guidance": 3.5}, 3.5),
    "guidance_2": ({"model": "t2v-a14b", "guidance_2": 2.5}, 2.5),
    "shift": ({"shift": 7.0}, 7.0),
    "seed": ({"seed": 1234.0}, 1234),
    "audio": ({"audio": "AUDIO"}, "AUDIO"),
    "last_image": ({"last_image": "IMAGE"}, "IMAGE"),
    "framing": ({"framing": "crop"}, "crop"),
    "total_frames": ({"long_clip": True, "total_seconds": 4}, 33),  # 4 s at 8 fps, as 4k+1
    "window_overlap": ({"long_clip": True, "overlap": 3.0}, 3),
    "window_prompts": ({"long_clip": True, "window_prompts": "a boat\na swan"}, ["a boat", "a swan"]),
    "loras": ({"loras": "style.safetensors:0.5"}, [{"file": "style.safetensors", "weight": 0.5}]),
    "step_cache": ({"step_cache": "first_block"}, "first_block"),
    "cache_threshold": ({"step_cache": "first_block", "cache_threshold": 0.2}, 0.2),
    "overrides": ({"offload": "cpu", "compile": "off"}, {"offload": "cpu", "compile": False}),
    "fast": ({"fast": "demo-distilled"}, "demo-distilled"),
    "motion_steps": ({"fast": "demo-distilled", "motion_steps": 1.0}, 1),
}


def test_the_advanced_form_lays_out_every_advanced_field() -> None:
    from wan_studio.ui.advanced_form import BUILT_BY_HAND, TABLE_FIELDS

    assert set(FORM_CHANGES) == BUILT_BY_HAND
    assert set(FORM_CHANGES) | set(TABLE_FIELDS) == set(fields_of(ADVANCED))


@pytest.mark.parametrize("name", fields_of(ADVANCED))
def test_an_advanced_widget_reaches_the_request(made, name: str) -> None:
    """Through the tab's own conversion: widget values by name → ``form_of`` → ``build_request``."""
    from tests.ui.test_advanced_tab import BASE
    from wan_studio.ui.advanced_form import TABLE_FIELDS, build_request, form_of

    if name in TABLE_FIELDS:  # a widget made from the table: the value goes in as it is
        change, expected = samples(made)[name], samples(made)[name][name]
        change = {k: v for k, v in change.items() if k in TABLE_FIELDS or k in BASE}
    else:
        change, expected = FORM_CHANGES[name]
        paths = {"IMAGE": made["image"], "AUDIO": made["audio"]}
        change = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
        expected = paths.get(expected, expected) if isinstance(expected, str) else expected
    assert getattr(build_request(form_of({**BASE, **change})), name) == expected
    assert FIELDS[name].help
