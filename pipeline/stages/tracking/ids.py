"""Track ids of one stream, handed out by a counter that may outlive the stream's trackers."""
from __future__ import annotations

import numpy as np


class TrackIds:
    """Hands out one stream's track ids, 1, 2, 3, ... Kept for the stream through a run, it outlives the
    stream's trackers: a stream restarted while running (changed, or removed and added again) gets a new
    tracker, and no id is given twice in the run."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> np.ndarray:
        """The next `n` ids, (n,) int64."""
        ids = np.arange(self.next, self.next + n, dtype=np.int64)
        self.next += n
        return ids
