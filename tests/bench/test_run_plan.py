"""The benchmark harness keeps working: its --tiny CPU run produces a plan-annotated result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_run_writes_results_with_plan_and_timings(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/run_plan.py", "--tiny", "--model", "t2v-a14b", "--sizes", "64x64x5",
         "--steps", "2", "--baselines", "model_offload", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "t2v-a14b.json").read_text(encoding="utf-8"))
    cases = {r["case"]: r for r in results}
    assert set(cases) == {"diffusers model_offload", "ours: cpu"}
    ours = cases["ours: cpu"]
    assert ours["error"] is None and ours["plan"]["model"] == "t2v-a14b"
    assert ours["step_median_s"] > 0 and ours["decode_s"] > 0 and ours["text_s"] > 0
    assert "ours: cpu" in proc.stdout  # the table


def test_steps_below_two_are_refused() -> None:
    proc = subprocess.run([sys.executable, "bench/run_plan.py", "--tiny", "--model", "demo", "--steps", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "at least 2" in proc.stderr
