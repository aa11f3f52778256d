"""A preset per workflow row of the plan, each checked at start (a broken one is named, the app
starts with the rest) and shown with what it costs on this machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wan_studio.presets import PRESETS_DIR, load_presets, read_presets
from wan_studio.ui.advanced_form import build_request, form_of

PRESETS = load_presets()


def _row(workflow: str) -> set[tuple]:
    out = set()
    for p in PRESETS.values():
        if p.workflow == workflow:
            f = p.fields
            seconds = round((f.get("total_frames") or f.get("num_frames") or 0) / f.get("fps", 1))
            out.add((f["model"], f.get("width"), f.get("height"), seconds if f["model"] != "s2v-14b" else None,
                     "long" if f.get("total_frames") else "clip"))
    return out


def test_every_workflow_row_of_the_plan_has_its_presets() -> None:
    assert {("ti2v-5b", 1280, 704, 10, "clip"), ("ti2v-5b", 1920, 1088, 5, "clip"),
            ("s2v-14b", 1024, 704, None, "clip")} <= _row("intermediate")
    advanced = _row("advanced")
    assert {("t2v-a14b", 832, 480, 5, "clip"), ("t2v-a14b", 1280, 720, 5, "clip"),
            ("ti2v-5b", 1920, 1088, 10, "clip")} <= advanced
    assert any(kind == "long" and seconds == 20 for *_, seconds, kind in advanced)
    assert {"beginner-720p-5s", "demo-fast", "fast-demo-4step", "fast-t2v-a14b-480p"} <= set(PRESETS)


def test_the_intermediate_modes_use_the_intermediate_presets() -> None:
    from wan_studio.ui.intermediate import MODES

    scenes = {(p.fields["width"], p.fields["height"], p.fields["num_frames"]) for p in PRESETS.values()
              if p.workflow == "intermediate" and p.fields["model"] == "ti2v-5b"}
    talk = next(p.fields for p in PRESETS.values() if p.workflow == "intermediate" and p.fields["model"] == "s2v-14b")
    real = [m for name, m in MODES.items() if not name.startswith("Demo")]
    assert {(m["scene"]["width"], m["scene"]["height"], m["scene"]["num_frames"]) for m in real} == scenes
    assert all((m["talk"]["width"], m["talk"]["height"]) == (talk["width"], talk["height"]) for m in real)


def test_a_broken_preset_is_named_and_the_app_starts_with_the_others(tmp_path: Path) -> None:
    from wan_studio.services import Studio
    from wan_studio.settings import Settings

    folder = tmp_path / "presets"
    shutil.copytree(PRESETS_DIR, folder)
    bad = json.loads((folder / "beginner-720p-5s.json").read_text(encoding="utf-8"))
    (folder / "wide-720p.json").write_text(json.dumps({**bad, "name": "wide-720p", "width": 1000}), encoding="utf-8")
    (folder / "half.json").write_text('{"name": "half", "model": ', encoding="utf-8")
    presets, problems = read_presets(folder)
    assert "wide-720p" not in presets and "half" not in presets and set(PRESETS) <= set(presets)
    assert any("wide-720p.json" in p and "width 1000 is not a multiple of 32" in p for p in problems)
    assert any("half.json" in p and "cannot read JSON" in p for p in problems)
    studio = Studio.create(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs", workers=0),
                           presets_dir=folder)
    try:
        assert "demo-fast" in studio.presets
        assert any("wide-720p.json" in n and "left out" in n for n in studio.notices)
    finally:
        studio.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from wan_studio.services import Studio
    from wan_studio.settings import Settings

    root = tmp_path_factory.mktemp("presets")
    s = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs", workers=0))
    yield s
    s.close()


def test_each_preset_is_shown_with_its_cost_on_this_machine(studio) -> None:
    from wan_studio.ui.preset_costs import presets_markdown

    for workflow in ("beginner", "intermediate", "advanced"):
        text = presets_markdown(studio, workflow)
        for p in studio.presets_for(workflow):
            line = next(line for line in text.splitlines() if f"(`{p.name}`)" in line)
            assert "peak VRAM" in line or "cannot run" in line, line
            if p.fields["model"] != "demo":
                assert "is not downloaded" in line, line  # nothing is downloaded here
    demo = next(line for line in presets_markdown(studio, "beginner").splitlines() if "(`demo-fast`)" in line)
    assert "peak VRAM none (runs on the CPU)" in demo and "for the job" in demo and "of denoising" in demo


def test_picking_a_preset_in_advanced_makes_its_request(studio) -> None:
    from wan_studio.ui.preset_costs import form_of_preset
    from tests.ui.test_advanced_tab import BASE

    for name in ("advanced-long-20s", "advanced-a14b-720p", "fast-demo-4step", "intermediate-ti2v-1080p-5s"):
        preset = studio.presets[name]
        form = form_of({**BASE, **form_of_preset(preset)})
        made = build_request(form).resolved()
        want = preset.request("a paper boat").resolved()
        for key in ("model", "width", "height", "num_frames", "fps", "steps", "guidance", "shift", "total_frames",
                    "fast"):
            assert getattr(made, key) == getattr(want, key), (name, key)
