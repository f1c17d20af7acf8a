"""Reconnect delays: exponential growth with full jitter, so many cameras behind one failed switch
do not all knock on it at the same instant when it comes back."""
from __future__ import annotations

import random


class Backoff:
    """Delay before reconnect attempt n (from 0): uniform in `[min_s, min(max_s, min_s * 2**n)]`.

    min_s: first delay; small values reconnect a flapping camera quickly but hammer a dead one.
    max_s: the ceiling; large values spare a long-dead server but recover later when it returns.
    `reset()` after a connection that delivered frames starts the growth again from `min_s`.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None):
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next attempt may wait, in seconds."""
        return min(self.max_s, self.min_s * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one failed attempt."""
        delay = self._rng.uniform(self.min_s, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
