"""Per-stream timestamp bookkeeping in the worker: joining passes and numbering frames in their source."""
from __future__ import annotations

REPLAY_WINDOW_NS = 60 * 10**9
"""How far back of the last frame a reconnect's first frames may be and be taken as a replay (an HLS playlist's
last three segments are well within it)."""


class Timeline:
    """Joins the passes over one stream (file loops, live reconnects) into one increasing pts line, and says
    where each frame is in its source.

    The first pass keeps the stream's own clock. Each later pass is shifted so its first frame lands
    `gap_ns` after the last frame of the previous pass (one frame period for a loop, the wall-clock
    outage for a reconnect), so `pts_ns` never goes backwards for the stages downstream.
    After each `map`, `index` is that frame's 0-based position in its pass (every frame mapped counts, those
    an fps cap then skips too) and `epoch` the pass's number: 0, then one more for each pass that gives a
    frame (a reconnect attempt that gives none is no new epoch).

    A pass started with `skip_replayed` (an HLS reconnect: FFmpeg starts again three segments from the playlist's
    end) skips the frames whose source pts is at or before the last one mapped (`map` gives None for them), up
    to `REPLAY_WINDOW_NS` back: further back is a source whose clock started again, not a replay.
    """

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.period_ns = 0  # the last positive step between frames, a stand-in for the frame period
        self.epoch = 0
        self.index = -1  # none mapped yet
        self._offset = 0
        self._gap_ns: int | None = None
        self._first_of_pass = True
        self._last_source_ns: int | None = None  # the source pts of the last frame mapped
        self._replayed_to: int | None = None  # skip source pts up to this one (an HLS reconnect's replay)

    def start_pass(self, gap_ns: int | None = None, skip_replayed: bool = False) -> None:
        """The next `map` call begins a new pass; None = one frame period after the last frame."""
        self._gap_ns = gap_ns
        self._first_of_pass = True
        self._replayed_to = self._last_source_ns if skip_replayed else None

    def map(self, pts_ns: int) -> int | None:
        """`pts_ns` of the current pass on the joined line, strictly greater than the previous result; None for a
        frame replayed after a reconnect (see the class)."""
        if self._replayed_to is not None:
            if self._replayed_to - REPLAY_WINDOW_NS <= pts_ns <= self._replayed_to:
                return None
            self._replayed_to = None
        self._last_source_ns = pts_ns
        if self._first_of_pass:
            self._first_of_pass = False
            self.index = 0
            if self.last_ns is not None:
                self.epoch += 1
                gap = self._gap_ns if self._gap_ns is not None else self.period_ns
                self._offset = self.last_ns + max(gap, self.period_ns, 1) - pts_ns
        else:
            self.index += 1
        out = pts_ns + self._offset
        if self.last_ns is not None:
            if out <= self.last_ns:
                out = self.last_ns + 1
            else:
                self.period_ns = out - self.last_ns
        self.last_ns = out
        return out
