"""The planner's predictions stay pinned to the GPU measurements (tests/data/gpu_measured.json,
docs/BENCHMARKS.md "Size menu"): peak VRAM and the step within ±10 %, every other measured phase
within ±20 % (or a second, a quarter second for text encoding, where a phase is near zero) for
each row, with the plan that ran."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import fit_table  # noqa: E402

ROWS = fit_table.rows()


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
def test_prediction_within_band_of_the_measured_row(row: dict) -> None:
    checks = fit_table.checks(row)
    assert any(c.figure == "peak VRAM GiB" for c in checks) and any(c.figure == "s/step" for c in checks)
    missed = [f"{c.figure}: predicted {c.predicted:.2f}, measured {c.measured:.2f} ({c.error:+.0%})"
              for c in checks if not c.ok and not c.known_miss]
    assert not missed, missed
    # a miss written down as known is still one (remove the note once the model explains it)
    assert all(not c.ok for c in checks if c.known_miss), [c for c in checks if c.known_miss and c.ok]
    assert set(row.get("known_misses", {})) <= {c.figure for c in checks}


def test_every_model_and_phase_the_issue_names_is_recorded() -> None:
    models = {r["model"] for r in ROWS}
    assert {"ti2v-5b", "t2v-a14b", "s2v-14b"} <= models
    figures = {c.figure for c in fit_table.every_check()}
    assert {"decode s", "mp4 s", "text s", "load s (cold)", "text + compile s (first job)"} <= figures
    # a VRAM miss of 11 % is caught (the band is real)
    c = fit_table.Check("x", "peak VRAM GiB", 11.1, 10.0, fit_table.VRAM_TOL)
    assert not c.ok
    # so is a step 13 % fast, as S2V's was before its reference and motion tokens were counted
    s2v = next(c for r in ROWS if r["case"].startswith("S2V-14B 1024") for c in fit_table.checks(r) if c.figure == "s/step")
    assert s2v.ok and not replace(s2v, predicted=s2v.measured * 0.87).ok


def test_the_workers_compile_log_replayed_over_each_gpu_run_finds_every_recompile() -> None:
    worker_rows = [r for r in ROWS if r["harness"] == "worker"]
    assert len({r["worker_run"] for r in worker_rows}) == 7
    for row in worker_rows:
        needs = fit_table.compile_needs(row)
        want = ["compile"] if not row["warm"] else (["recompile"] if row["new_shape"] else ["none"])
        assert needs == want, (row["case"], needs)
    # 720p 10 s, 1080p 5 s from an image, portrait 720p 5 s and T2V-A14B's 720p after its 480p
    # recompiled (4-6 s beyond a step); S2V's 1024×704 after its 832×480 is a new shape too
    # I2V-A14B's 720p after its 480p too
    assert sum(r["new_shape"] for r in worker_rows) == 6
    figures = {c.figure for c in fit_table.every_check()}
    assert "text + recompile s (new size)" in figures
