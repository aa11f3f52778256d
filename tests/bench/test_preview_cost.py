"""The preview cost benchmark keeps working: its --tiny CPU run times the preview of both latent
families through the sampler's x0 prediction and writes its figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def test_tiny_run_times_both_families_and_writes_its_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import preview_cost

    monkeypatch.setenv("OUT", str(tmp_path))
    result = preview_cost.main(["--tiny", "--reps", "2"])
    assert {tuple(r["latents"][:2]) for r in result["cases"].values()} == {(1, 48), (1, 16)}
    for row in result["cases"].values():
        assert row["source"] == "x0" and row["ms_per_step"] > 0 and row["file_kb"] > 0
    assert json.loads((tmp_path / "preview_cost.json").read_text())["cases"] == result["cases"]
