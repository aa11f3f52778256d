"""The size-menu benchmark keeps working: its --tiny CPU run sends every case through the queue and a
worker process, cold then warm, and reports prediction beside measurement for each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_menu_runs_every_case_through_the_worker_and_reports_each_phase(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/size_menu.py", "--tiny", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "size_menu.json").read_text())
    rows = result["rows"]
    assert [r["case"] for r in rows] == ["tiny", "tiny, image", "tiny 9 f", "tiny (warm)"]
    assert all(r["status"] == "done" for r in rows)
    assert rows[0]["warm"] is False and rows[-1]["warm"] is True
    for r in rows:
        assert r["plan"] and r["pred_step_s"] > 0 and r["step_s"] > 0
        assert r["decode_s"] > 0 and r["write_s"] > 0 and r["submit_to_mp4_s"] >= r["denoise_s"]
        assert r["checkpoint_share_of_step"] is not None
        assert r["text_s"] > 0 and r["place_s"] is not None and r["place_s"] <= r["load_s"] + 0.05
        assert r["pred_phases"]["decode_s"] > 0 and r["predicted_vs_measured"]["job_s"][1] > 0
    assert "| tiny (warm) |" in proc.stdout  # the Markdown rows for docs/BENCHMARKS.md


@pytest.mark.parametrize("model,case", [("t2v-a14b", "tiny T2V-A14B"), ("i2v-a14b", "tiny I2V-A14B, image")])
def test_tiny_a14b_is_saved_in_diffusers_layout_and_loaded_from_disk_by_the_worker(tmp_path: Path, model: str,
                                                                                  case: str) -> None:
    from wan_studio.catalog.specs import get_spec

    models = tmp_path / "models"
    proc = subprocess.run([sys.executable, "bench/size_menu.py", "--tiny", "--model", model, "--cases", case,
                           "--models", str(models), "--out", str(tmp_path), "--timeout-s", "400"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = models / get_spec(model).folder
    assert json.loads((folder / "model_index.json").read_text())["transformer_2"] == ["diffusers",
                                                                                      "WanTransformer3DModel"]
    rows = json.loads((tmp_path / "size_menu.json").read_text())["rows"]
    assert [r["case"] for r in rows] == [case, case + " (warm)"]
    cold, warm = rows
    assert all(r["status"] == "done" for r in rows)
    assert cold["warm"] is False and warm["warm"] is True
    assert cold["place_s"] > 0  # the worker read the folder: a cold job spent time loading it
    for r in rows:
        fit = r["fit_row"]  # what tests/data/gpu_measured.json needs of a worker row
        assert fit["model"] == model and fit["harness"] == "worker" and fit["plan"] == r["plan"]
        assert (fit["width"], fit["height"], fit["frames"], fit["steps"]) == (256, 256, 5, 2)
        assert fit["image"] is (model == "i2v-a14b")
        assert fit["s_per_step"] > 0 and fit["decode_s"] > 0 and fit["write_s"] > 0
        assert fit["first_step_s"] >= fit["s_per_step"] * 0.5 and fit["denoise_s"] >= fit["first_step_s"]
        assert r["predicted_vs_measured"]["job_s"][1] > 0
    assert cold["fit_row"]["load_s"] > 0 and warm["fit_row"]["load_s"] is None
    assert "RESULT " in proc.stdout and f"| {case} (warm) |" in proc.stdout


def test_a14b_experts_share_their_files_when_the_disk_holds_only_one(tmp_path: Path) -> None:
    """The 1-GPU device machine's disk holds T2V-A14B with one expert's bytes, not two: the second
    expert is saved as hard links to the first's files, and the worker still loads both from disk."""
    import os

    from wan_studio.catalog.specs import get_spec

    models = tmp_path / "models"
    case = "tiny T2V-A14B"
    proc = subprocess.run([sys.executable, "bench/size_menu.py", "--tiny", "--model", "t2v-a14b", "--cases", case,
                           "--models", str(models), "--out", str(tmp_path), "--timeout-s", "400"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "SIZE_MENU_LINK_EXPERTS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = models / get_spec("t2v-a14b").folder
    first = sorted((folder / "transformer").iterdir())
    second = sorted((folder / "transformer_2").iterdir())
    assert [f.name for f in first] == [f.name for f in second]
    assert all(a.stat().st_ino == b.stat().st_ino for a, b in zip(first, second))
    index = json.loads((folder / "model_index.json").read_text())
    assert index["transformer_2"] == index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    rows = json.loads((tmp_path / "size_menu.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["done", "done"] and rows[0]["place_s"] > 0


def test_the_disk_check_links_the_experts_only_when_one_expert_fits(tmp_path: Path, monkeypatch) -> None:
    import shutil

    sys.path.insert(0, str(ROOT / "bench"))
    import size_menu
    from wan_studio.catalog.specs import get_spec

    spec = get_spec("t2v-a14b")
    both = sum(c.bytes for c in spec.components)
    expert = next(c.bytes for c in spec.components if c.name == "transformer_2")
    usage = shutil.disk_usage(tmp_path)

    def free(n: int):
        monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=n))

    free(int(both * 1.1))
    assert size_menu.free_disk_for(tmp_path, "t2v-a14b", evict=False) is False
    free(int((both - expert) * 1.1))
    assert size_menu.free_disk_for(tmp_path, "t2v-a14b", evict=False) is True
    free(int((both - expert) * 0.9))
    with pytest.raises(SystemExit, match="needs .* GB on disk"):
        size_menu.free_disk_for(tmp_path, "t2v-a14b", evict=False)
    ti2v = sum(c.bytes for c in get_spec("ti2v-5b").components)
    free(int(ti2v * 0.9))  # one transformer: nothing to share
    with pytest.raises(SystemExit, match="needs .* GB on disk"):
        size_menu.free_disk_for(tmp_path, "ti2v-5b", evict=False)
def test_tiny_s2v_is_saved_in_the_official_layout_and_runs_through_the_worker_with_speech(tmp_path: Path) -> None:
    from wan_studio.catalog.loading import check_s2v_folder
    from wan_studio.catalog.specs import get_spec

    models = tmp_path / "models"
    case = "tiny S2V-14B"
    proc = subprocess.run([sys.executable, "bench/size_menu.py", "--tiny", "--model", "s2v-14b", "--cases", case,
                           "--models", str(models), "--out", str(tmp_path), "--timeout-s", "400"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = models / get_spec("s2v-14b").folder
    check_s2v_folder(folder)  # the app's own check of the release's files
    assert (folder / "Wan2.1_VAE.pth").is_file() and (folder / "models_t5_umt5-xxl-enc-bf16.pth").is_file()
    rows = json.loads((tmp_path / "size_menu.json").read_text())["rows"]
    assert [r["case"] for r in rows] == [case, case + " (warm)"]
    assert all(r["status"] == "done" for r in rows)
    cold, warm = rows
    assert cold["warm"] is False and warm["warm"] is True and cold["place_s"] > 0
    for r in rows:
        fit = r["fit_row"]
        assert fit["model"] == "s2v-14b" and fit["image"] is True
        assert fit["frames"] == 16  # 1 s of speech at 16 fps
        # the runner times denoising, s/step, the write and the total; first step and decode derived
        assert 0 < fit["s_per_step"] <= fit["first_step_s"] <= fit["denoise_s"]
        assert fit["decode_s"] > 0 and fit["write_s"] > 0
        beside = r["predicted_vs_measured"]
        assert beside["decode_s"][1] == pytest.approx(r["decode_s"], abs=1e-3) and beside["job_s"][1] > 0


def test_tiny_s2v_runs_through_the_worker_and_writes_off_the_gpu_path(tmp_path: Path) -> None:
    """Speech to video through the queue and a worker process from its official layout on disk: the
    mp4 and its muxed speech are written by the worker's background writer (the next job may use
    the GPU meanwhile), and what ran before the first step is timed part by part."""
    from wan_studio.engine.video_io import audio_duration_s

    proc = subprocess.run([sys.executable, "bench/size_menu.py", "--tiny", "--model", "s2v-14b", "--cases",
                           "tiny S2V-14B", "--models", str(tmp_path / "models"), "--out", str(tmp_path),
                           "--timeout-s", "400"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "size_menu.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["tiny S2V-14B", "tiny S2V-14B (warm)"]
    for r in rows:
        assert r["status"] == "done", r["error"]
        assert r["mp4_written"] == "off the GPU's path"
        assert r["mp4_s"] > 0 and r["mux_s"] > 0 and abs(r["mp4_s"] + r["mux_s"] - r["write_s"]) < 0.01
        assert r["speech_s"] > 0 and r["reference_s"] > 0 and r["text_s"] > 0
        assert r["decode_s"] > 0 and r["predicted_vs_measured"]["decode_s"][1] == r["decode_s"]
        speech = audio_duration_s(Path(next(o for o in r["outputs"] if o.endswith(".mp4"))))
        assert speech is not None and speech > 0.5  # the speech is in the video the writer made
    assert "TRACE" in proc.stdout and "stage writing" in proc.stdout
