"""Per-stream timestamp bookkeeping in the worker: joining passes and numbering frames in their source."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.sources.packets import PacketRings

REPLAY_WINDOW_NS = 60 * 10**9
"""How far before the last frame of the pass before a reconnected HLS camera's first frames may lie and still be
taken for a replay: FFmpeg opens a live playlist three segments (a few seconds each) before its end. A camera
that restarts its clock lands further back, or ahead."""


class Timeline:
    """Joins the passes over one stream (file loops, live reconnects) into one increasing pts line, and says
    where each frame is in its source.

    The first pass keeps the stream's own clock. Each later pass is shifted so its first frame lands
    `gap_ns` after the last frame of the previous pass (one frame period for a loop, the wall-clock
    outage for a reconnect), so `pts_ns` never goes backwards for the stages downstream.
    After each `map`, `index` is that frame's 0-based position in its pass (every frame mapped counts, those
    an fps cap then skips too) and `epoch` the pass's number: 0, then one more for each pass that gives a
    frame (a reconnect attempt that gives none is no new epoch).
    packets: the stream's `PacketRings`, told where each pass lies on the line (`align`, with its first frame)
    and when it ends (`end_pass`), so that clips are cut at their events' moments in every pass (an event's
    time is on the line, the packets' on their own clock).
    replays: the passes may begin with frames the pass before delivered (HLS: a playlist that stopped growing is
    read again from near its end at each reconnect); `replayed` says which, before they are mapped.
    """

    def __init__(self, stream_id: str = "", packets: PacketRings | None = None, replays: bool = False) -> None:
        self.last_ns: int | None = None
        self.period_ns = 0  # the last positive step between frames, a stand-in for the frame period
        self.epoch = 0
        self.index = -1  # none mapped yet
        self._offset = 0
        self._gap_ns: int | None = None
        self._first_of_pass = True
        self._stream_id = stream_id
        self._rings = packets
        self._replays = replays
        self._pass_last: int | None = None  # the current pass's last pts mapped, on its own clock
        self._delivered: int | None = None  # the last pts, on its own clock, of the last pass that mapped one

    def start_pass(self, gap_ns: int | None = None) -> None:
        """The next `map` call begins a new pass; None = one frame period after the last frame."""
        self._gap_ns = gap_ns
        self._first_of_pass = True
        if self._pass_last is not None:
            self._delivered, self._pass_last = self._pass_last, None

    def replayed(self, pts_ns: int) -> bool:
        """A frame (on its pass's clock) that the pass before delivered already: until this pass maps one, one at
        or up to `REPLAY_WINDOW_NS` before the last that pass delivered."""
        return (self._replays and self._pass_last is None and self._delivered is not None
                and self._delivered - REPLAY_WINDOW_NS <= pts_ns <= self._delivered)

    def end_pass(self) -> None:
        """The current pass has ended (its file's end, its camera gone): the rings write its clips still waiting."""
        if self._rings is not None:
            self._rings.end_pass(self._stream_id)

    def map(self, pts_ns: int) -> int:
        """`pts_ns` of the current pass on the joined line; strictly greater than the previous result."""
        self._pass_last = pts_ns
        if self._first_of_pass:
            self._first_of_pass = False
            self.index = 0
            if self.last_ns is not None:
                self.epoch += 1
                gap = self._gap_ns if self._gap_ns is not None else self.period_ns
                self._offset = self.last_ns + max(gap, self.period_ns, 1) - pts_ns
            if self._rings is not None:
                self._rings.align(self._stream_id, self._offset)
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
