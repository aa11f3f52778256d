"""A bounded soak on loopback (scaled down for CI; ``python bench/soak.py --minutes 30`` for the long one):
clients submit, poll, cancel and download while the worker is killed at random."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import soak  # noqa: E402


def test_soak_with_worker_kills_loses_nothing_and_memory_stays_bounded():
    result = soak.run(minutes=0.5, clients=4, kill_every_s=(3.0, 8.0), seed=11)
    assert result.problems == []  # no lost job, no reason-less failure, no orphan file, bounded RSS
    assert result.kills >= 2  # the worker really was killed (and restarted) during the run
    assert result.accepted > 0 and result.done > 0
    assert result.done + result.failed + result.cancelled == result.accepted
    assert result.client_errors == 0
