"""The one retry schedule: sources' reconnects, the outbox's couriers, the storage writer, event publishing."""
from __future__ import annotations

import random

import pytest

from pipeline.backoff import Backoff


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(backoff: Backoff, clock: Clock, attempt_s: float, until_s: float) -> list[tuple[float, float, float]]:
    """(down_s, ceiling, delay) of every retry of an outage whose attempts each take `attempt_s` to fail."""
    start, rows = clock.now, []
    while clock.now - start < until_s:
        clock.now += attempt_s
        ceiling, delay = backoff.ceiling(), backoff.next_delay()
        rows.append((clock.now - start, ceiling, delay))
        clock.now += delay
    return rows


def test_the_wait_grows_with_the_time_down_not_with_the_attempts():
    """Refusals that come back at once and attempts that time out after 5 s: after the same time down,
    the same ceiling, however many attempts failed meanwhile."""
    for attempt_s in (0.0, 5.0):
        clock = Clock()
        backoff = Backoff(0.5, 30.0, rng=random.Random(3), clock=clock)
        for down_s, ceiling, delay in schedule(backoff, clock, attempt_s, until_s=120):
            since_first_failure = down_s - attempt_s
            assert ceiling == pytest.approx(min(30.0, max(0.5, since_first_failure)))
            assert max(0.5, ceiling / 2) <= delay <= ceiling


def test_a_few_seconds_of_refused_connections_keep_a_camera_retrying_every_two_seconds_at_most():
    clock = Clock()
    backoff = Backoff(0.5, 2.0, rng=random.Random(1), clock=clock)
    rows = schedule(backoff, clock, attempt_s=0.001, until_s=60)
    delays = [delay for _, _, delay in rows]
    assert delays[0] == 0.5  # the first retry comes at min_s
    assert max(delays) <= 2.0 and max(delays[-10:]) > 1.5
    assert len(rows) > 30  # 60 s down: about one attempt every 1.5 s, not a handful at 30 s


def test_the_wait_is_never_longer_than_the_outage_so_far():
    clock = Clock()
    backoff = Backoff(0.5, 30.0, rng=random.Random(5), clock=clock)
    for down_s, _, delay in schedule(backoff, clock, attempt_s=0.2, until_s=200):
        assert delay <= max(0.5, down_s)


def test_reset_after_a_success_starts_the_next_outage_at_min_s():
    clock = Clock()
    backoff = Backoff(0.5, 8.0, rng=random.Random(2), clock=clock)
    backoff.next_delay()
    clock.now += 60
    assert backoff.ceiling() == 8.0 and backoff.attempt == 1
    backoff.reset()
    assert backoff.ceiling() == 0.5 and backoff.down_s() == 0.0
    clock.now += 100  # time up while nothing failed is not an outage
    assert backoff.next_delay() == 0.5 and backoff.attempt == 1


def test_jitter_spreads_retries_of_peers_down_at_the_same_moment():
    clock = Clock()
    peers = [Backoff(0.5, 2.0, rng=random.Random(seed), clock=clock) for seed in range(8)]
    for peer in peers:
        peer.next_delay()
    clock.now += 30
    assert len({round(peer.next_delay(), 6) for peer in peers}) == 8


def test_fresh_copies_the_policy_without_the_outage():
    clock = Clock()
    backoff = Backoff(0.5, 4.0, clock=clock)
    backoff.next_delay()
    clock.now += 10
    copy = backoff.fresh()
    assert (copy.min_s, copy.max_s, copy.ceiling(), copy.attempt) == (0.5, 4.0, 0.5, 0)


def test_backoff_rejects_a_min_above_its_max():
    with pytest.raises(ValueError, match="min_s=5"):
        Backoff(5, 1)
