"""Retry delays for everything that retries: reconnecting sources, the outbox's couriers, the storage
writer, event publishing. One rule: the wait grows with how long the peer has been failing, not with how
many attempts failed, so quick refusals (a camera rebooting refuses connections at once) do not push the
wait up faster than the outage itself grows; the wait is never longer than the outage so far, so a peer
that comes back loses at most as long again (and at most `max_s`). Full jitter, so many cameras (or
outputs) behind one failed switch do not all knock on it at the same instant when it comes back."""
from __future__ import annotations

import random
import time
from typing import Callable


class Backoff:
    """Delay before the next retry, after the peer has been failing for `down_s` seconds: uniform in
    `[max(min_s, c / 2), c]` with `c = min(max_s, max(min_s, down_s))`.

    min_s: the first delay; small values recover a flapping peer quickly but hammer a dead one.
    max_s: the ceiling; large values spare a long-dead peer but notice later that it is back (a camera
    back after an outage waits up to `max_s` more, so cameras keep it low).
    The outage starts at the first `next_delay()` after construction or `reset()`; `reset()` after a
    success. `clock` is the monotonic time in seconds. Each retrying thread keeps its own instance
    (`fresh()` copies the policy without the outage).
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._down_since: float | None = None

    def down_s(self) -> float:
        """Seconds since the first failure of this outage (0 before it)."""
        return 0.0 if self._down_since is None else max(0.0, self._clock() - self._down_since)

    def ceiling(self) -> float:
        """The largest delay the next attempt may wait, in seconds."""
        return min(self.max_s, max(self.min_s, self.down_s()))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one failed attempt."""
        if self._down_since is None:
            self._down_since = self._clock()
        ceiling = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(max(self.min_s, ceiling / 2), ceiling)

    def reset(self) -> None:
        self.attempt = 0
        self._down_since = None

    def fresh(self) -> "Backoff":
        """The same policy with no outage."""
        return Backoff(self.min_s, self.max_s, clock=self._clock)

    def __repr__(self) -> str:
        return f"Backoff(min_s={self.min_s}, max_s={self.max_s})"
