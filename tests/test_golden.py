"""Fresh runs of the tiny models with fixed seeds match their recorded outputs within fp32 noise
(tests/golden.py says what is recorded; scripts/record_golden.py re-records)."""

from __future__ import annotations

import pytest

from tests.golden import CASES, compare


@pytest.mark.parametrize("name", list(CASES))
def test_output_matches_its_recording(name: str) -> None:
    compare(name)
