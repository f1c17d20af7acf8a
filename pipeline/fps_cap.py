"""The fps cap: which frames of a faster source to take, by their timestamps (a stream's `fps`, `detect --fps`)."""
from __future__ import annotations


class FpsCap:
    """Keeps frames so that their pts are at least `1/fps` apart (with 5% slack for rounding).

    fps: the cap in frames per second, None = keep everything. The kept rate equals the cap when the
    source is faster; a slower source is passed through unchanged.
    """

    def __init__(self, fps: float | None):
        self.interval_ns = round(1e9 / fps) if fps else 0
        self._slack_ns = self.interval_ns // 20
        self._next_due: int | None = None

    def keep(self, pts_ns: int) -> bool:
        """True if the frame at `pts_ns` is kept; call once per frame in pts order."""
        if not self.interval_ns:
            return True
        if self._next_due is not None and pts_ns < self._next_due - self._slack_ns:
            return False
        late = self._next_due is None or pts_ns - self._next_due >= self.interval_ns
        self._next_due = pts_ns + self.interval_ns if late else self._next_due + self.interval_ns
        return True
