"""Retry delays for everything that retries: reconnecting sources, the outbox's couriers, the storage
writer, event publishing. One rule: exponential growth with full jitter, so many cameras (or outputs)
behind one failed switch do not all knock on it at the same instant when it comes back, and with a
floor of half the current ceiling, so a long outage is never probed at the minimum rate again."""
from __future__ import annotations

import random


class Backoff:
    """Delay before retry n (from 0): uniform in `[max(min_s, c / 2), c]` with `c = min(max_s, min_s * 2**n)`.

    min_s: first delay; small values recover a flapping peer quickly but hammer a dead one.
    max_s: the ceiling; large values spare a long-dead peer but notice later that it is back.
    `reset()` after a success starts the growth again from `min_s`. Each retrying thread keeps its own
    instance (`fresh()` copies the policy without the count).
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None):
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
        ceiling = self.ceiling()
        delay = self._rng.uniform(max(self.min_s, ceiling / 2), ceiling)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def fresh(self) -> "Backoff":
        """The same policy with no attempts counted."""
        return Backoff(self.min_s, self.max_s)

    def __repr__(self) -> str:
        return f"Backoff(min_s={self.min_s}, max_s={self.max_s})"
