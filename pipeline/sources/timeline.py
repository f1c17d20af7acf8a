"""Per-stream timestamp bookkeeping in the worker: joining passes and capping the frame rate."""
from __future__ import annotations


class Timeline:
    """Joins the passes over one stream (file loops, live reconnects) into one increasing pts line.

    The first pass keeps the stream's own clock. Each later pass is shifted so its first frame lands
    `gap_ns` after the last frame of the previous pass (one frame period for a loop, the wall-clock
    outage for a reconnect), so `pts_ns` never goes backwards for the stages downstream.
    """

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.period_ns = 0  # the last positive step between frames, a stand-in for the frame period
        self._offset = 0
        self._gap_ns: int | None = None
        self._first_of_pass = True

    def start_pass(self, gap_ns: int | None = None) -> None:
        """The next `map` call begins a new pass; None = one frame period after the last frame."""
        self._gap_ns = gap_ns
        self._first_of_pass = True

    def map(self, pts_ns: int) -> int:
        """`pts_ns` of the current pass on the joined line; strictly greater than the previous result."""
        if self._first_of_pass:
            self._first_of_pass = False
            if self.last_ns is not None:
                gap = self._gap_ns if self._gap_ns is not None else self.period_ns
                self._offset = self.last_ns + max(gap, self.period_ns, 1) - pts_ns
        out = pts_ns + self._offset
        if self.last_ns is not None:
            if out <= self.last_ns:
                out = self.last_ns + 1
            else:
                self.period_ns = out - self.last_ns
        self.last_ns = out
        return out


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
