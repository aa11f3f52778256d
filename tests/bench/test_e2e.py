"""The end-to-end benchmark keeps working: its --tiny CPU run times both paths and compares frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_run_reports_both_jobs_phase_by_phase_and_their_frames_agree() -> None:
    proc = subprocess.run([sys.executable, "bench/e2e.py", "--tiny"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for run in ("baseline", "ours"):
        r = result[run]
        assert r["job_s"] > 0 and r["s_per_step"] > 0 and r["decode_s"] > 0 and r["text_s"] > 0
        assert 0 < r["fixed_share"] < 1
        assert r["first_step_s"] > 0
    assert result["place_s"] >= 0
    assert result["speedup"] > 0
    # Same request, same weights: on the CPU the two paths give the same video up to rounding.
    assert result["frames_vs_baseline"]["max_abs"] <= 2
