"""`Sources.join_all`: the time a stop waits for stuck readers is one limit for all of them, not one each."""
from __future__ import annotations

import threading

from pipeline.sources.manager import Sources


class _Stuck:
    """A reader blocked in a read that outlasts any stop: `join` waits as long as it is let, and fails."""

    def __init__(self, waited: list[float]):
        self._waited = waited

    def join(self, timeout: float | None = None) -> bool:
        self._waited.append(timeout)
        threading.Event().wait(timeout)
        return False


def test_stuck_readers_share_one_time_limit_and_are_all_reported(caplog):
    waited: list[float] = []
    sources = Sources(sink=None)
    sources._workers = {f"cam-{i}": _Stuck(waited) for i in range(4)}
    assert sources.join_all(0.2) is False
    assert len(waited) == 4 and sum(waited) <= 0.25  # 64 stuck cameras would otherwise hold a stop 64 times over
    assert [r.getMessage().split()[2] for r in caplog.records] == [f"cam-{i}" for i in range(4)]  # each named
