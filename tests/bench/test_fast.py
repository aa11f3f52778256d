"""The fast-job benchmark keeps working: its --tiny CPU run times the official and the fast job
through the worker's job path, the fast one at one transformer pass per step with its distill LoRAs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_run_reports_the_official_and_the_fast_job() -> None:
    proc = subprocess.run([sys.executable, "bench/fast.py", "--tiny", "--model", "t2v-a14b"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    official, fast = result["official"], result["fast"]
    assert result["fast_recipe"] == "lightning-t2v-a14b"
    assert (official["passes_per_step"], fast["passes_per_step"]) == (2.0, 1.0)
    assert fast["steps"] == 4 and fast["guidance"] == [1.0, 1.0] and fast["decode"] == "bf16"
    for row in (official, fast):
        assert row["job_s"] > 0 and row["s_per_step"] > 0 and row["decode_s"] > 0
    assert result["speedup"] > 0
