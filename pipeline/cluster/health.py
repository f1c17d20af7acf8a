"""When an instance whose detector fails hands its cameras on, and how long it then takes none (its coordinator
asks at each heartbeat; docs/SCALING.md, "A detector that fails")."""
from __future__ import annotations

from typing import Callable

MAX_COOL_DOWN_S = 600.0
"""The longest an instance whose detector fails takes no cameras before it tries again."""


class DetectorWatch:
    """detector() gives (batches failed so far, batches through so far). `failed` is True once every heartbeat
    for `lease_s` saw batches fail and none go through, with cameras held; after `gave_up` the instance takes no
    cameras while `cooling`: a lease, doubled each time it gives up again without a batch through in between,
    up to MAX_COOL_DOWN_S."""

    def __init__(self, detector: Callable[[], tuple[int, int]], lease_s: float):
        self._detector, self.lease_s = detector, lease_s
        self.cool_down_s = lease_s  # the next one
        self._seen = (0, 0)  # (failed, through) at the last look
        self._failing_from: float | None = None  # the first of the looks in a row that saw it fail
        self._cool_until = float("-inf")

    def failed(self, now: float, holding: bool) -> bool:
        (failed, through), (failed_before, through_before) = self._detector(), self._seen
        self._seen = (failed, through)
        failing = failed > failed_before and through == through_before
        if through > through_before:  # it works: a later give-up cools down for a lease again, not for longer
            self.cool_down_s = self.lease_s
        if not (failing and holding):
            self._failing_from = None
            return False
        self._failing_from = now if self._failing_from is None else self._failing_from
        return now - self._failing_from >= self.lease_s

    def gave_up(self, now: float) -> None:
        self._failing_from = None
        self._cool_until = now + self.cool_down_s
        self.cool_down_s = min(2 * self.cool_down_s, MAX_COOL_DOWN_S)

    def cooling(self, now: float) -> bool:
        return now < self._cool_until
