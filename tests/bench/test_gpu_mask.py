"""The GPU-mask check runs on a CPU machine: a worker with an empty mask sees no CUDA device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_empty_mask_worker_sees_no_device() -> None:
    proc = subprocess.run([sys.executable, "bench/gpu_mask.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    empty = next(r for r in results if r["case"] == "empty mask")
    assert empty["verdict"] == "ok" and empty["mask"] == "" and empty["device_count"] == 0 and empty["error"]
