"""The Fast presets: picked in Beginner they queue a 4-step guidance-1 job; a fast preset whose distill
LoRAs are missing says so with the download command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.lora_files import write_lora
from wan_studio.engine.distill import get_recipe
from wan_studio.ui.beginner import fast_files_text


@pytest.fixture
def settings(tmp_path: Path):
    from wan_studio.settings import Settings

    return Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs", loras_dir=tmp_path / "loras")


def test_the_fast_demo_preset_runs_a_4_step_one_pass_job(studio) -> None:
    preset = studio.presets["fast-demo-4step"]
    assert preset in studio.presets_for("beginner")
    job = studio.submit(preset.request("a paper boat", seed=1, width=64, height=64, num_frames=5))
    done = studio.queue.wait(job.id, timeout_s=300)
    assert done.status == "done", done.error
    side = json.loads(Path(next(o for o in done.outputs if o.endswith(".json"))).read_text())
    assert side["request"]["steps"] == 4 and side["request"]["guidance"] == 1.0
    assert side["fast"]["recipe"] == "demo-distilled" and side["vae_decode"] == "bf16"


def test_a_fast_a14b_preset_without_its_loras_names_the_download(studio) -> None:
    import torch

    recipe = get_recipe(studio.presets["fast-t2v-a14b-480p"].fields["fast"])
    text = fast_files_text(studio, recipe.key)
    assert "not downloaded" in text and recipe.download_command(studio.settings.loras_dir) in text
    assert text.count("hf download lightx2v/Wan2.2-Lightning") == 1
    for f in recipe.loras:
        write_lora(Path(studio.settings.loras_dir) / f.file, {"blocks.0.self_attn.q.lora_down.weight": torch.zeros(1, 1)})
    assert fast_files_text(studio, "lightning-t2v-a14b") == ""
