"""The size-menu benchmark keeps working: its --tiny CPU run sends every case through the queue and a
worker process, cold then warm, and reports prediction beside measurement for each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
