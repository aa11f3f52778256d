"""The step-cache benchmark keeps working: its --tiny CPU run times every cache against none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_run_times_each_cache_and_the_skipping_ones_change_the_frames() -> None:
    proc = subprocess.run([sys.executable, "bench/step_cache.py", "--tiny", "--steps", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    rows = {r["cache"]: r for r in result["rows"]}
    assert list(rows) == ["off", "first_block", "mag", "taylorseer"]
    assert all(r["denoise_s"] > 0 for r in rows.values())
    # MagCache and TaylorSeer skip steps on any weights, so their frames differ from the uncached run.
    assert rows["mag"]["psnr_vs_off_db"] < 200 and rows["taylorseer"]["psnr_vs_off_db"] < 200
    assert "published" in rows["mag"]["note"] and "random weights" in result["caveat"]
