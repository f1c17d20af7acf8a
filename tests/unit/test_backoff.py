"""The one retry schedule: sources' reconnects, the outbox's couriers, the storage writer, event publishing."""
from __future__ import annotations

import random

import pytest

from pipeline.backoff import Backoff


def test_backoff_delays_start_at_min_grow_by_doubling_and_stop_at_max():
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert delays[0] == 0.5
    assert all(0.5 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays[3:])) == 5  # jittered, not in lock-step
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_backoff_rejects_a_min_above_its_max():
    with pytest.raises(ValueError, match="min_s=5"):
        Backoff(5, 1)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(0)
    backoff = Backoff(min_s=1.0, max_s=8.0, rng=rng)
    delays = [backoff.next_delay() for _ in range(1, 7)]
    for attempt, delay in enumerate(delays, start=1):
        base = min(8.0, 2 ** (attempt - 1))
        assert 0.5 * base <= delay <= base
    assert len({round(d, 6) for d in delays}) == len(delays)
