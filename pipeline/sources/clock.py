"""`FrameClock`: a pass's frame timestamps made strictly increasing, with the source's glitches repaired."""
from __future__ import annotations

import time
from collections import deque
from fractions import Fraction
from typing import Callable

from pipeline.sources.demux import Timing
from pipeline.sources.reader import DecodedFrame
from pipeline.types import PTS_UNKNOWN, pts_to_ns

RETURN_SLACK_NS = 10 * 10**9
"""How far the source's pts may be from where the line a discontinuity left would be by now (its pts there plus
the time since) and still be that line coming back: either way, as a restarted camera's pts pass the old line's."""

LEAP_STEPS = 4
"""A pts further ahead than this many steps (the frame period, or the stream's last ordinary step when longer) is
a leap, held until the next frame: more than a camera that drops a frame or two, or whose pts jitter, ever steps."""


class FrameClock:
    """Makes a pass's timestamps strictly increasing integer nanoseconds.

    timing "pts": the decoder's pts is kept; a missing pts continues from the previous frame by one
    frame period. "index" (raw streams): frame i is at `i / rate` seconds. "dts" (AVI): frame i is at the dts of
    the i-th packet given to `demuxed`, which counts the frames a recorder dropped. "arrival" (live MJPEG,
    whose container has no timestamps): a frame is at the time it is stamped, on the host's monotonic
    clock from the pass's first frame, so the camera's own (often uneven) pace shows rather than a
    guessed rate. A pts that goes back by more than a frame period is a discontinuity (an encoder that
    restarted, an HLS `#EXT-X-DISCONTINUITY`): the pass's later pts are moved so that frame comes one period
    after the one before, as a file's next loop is joined; and when the line left comes back about where it
    would be by now (an ad break ended, a single bad pts), it is joined again. A leap ahead (`LEAP_STEPS`)
    waits for the next frame: when that one is back on the line before the leap, the leaping frame was one
    bad pts and is put between its neighbours; else the leap is time that passed (a stall) and is kept. So a
    paced file never waits for a leap that is then repaired, and a live stream's frame after a leap comes one
    frame later. Any other pts that does not increase is nudged 1 ns past the previous one. A missing pts made
    up, a nudged one, a discontinuity and a repaired leap are counted in `repaired`.
    now: the host clock for "arrival", in nanoseconds.
    """

    def __init__(self, rate: Fraction, timing: Timing = "pts", now: Callable[[], int] = time.monotonic_ns):
        self.rate = rate
        self.timing = timing
        self._now = now
        self.frame_ns = self._at(1)
        self.count = 0
        self.repaired = 0
        self._last: int | None = None
        self._step = self.frame_ns  # the last step that was no leap, at least a frame period
        self._first_arrival_ns: int | None = None
        self._offset = 0  # added to the decoder's pts since the last discontinuity
        self._left: tuple[int, int] | None = None  # the source's pts, and ours, where the last discontinuity left it
        self._held: DecodedFrame | None = None  # a leap ahead (its pts ours), until the next frame
        self._dts: deque[int] = deque()  # timing "dts": the packets' dts, ns, for the frames still to come

    def _at(self, index: int) -> int:
        return pts_to_ns(index, 1 / self.rate)

    def arrived(self) -> int:
        """Timing "arrival": now on the pass's clock (ns from its first packet or frame), the same for packets
        (their clips) and frames."""
        now = self._now()
        if self._first_arrival_ns is None:
            self._first_arrival_ns = now
        return now - self._first_arrival_ns

    def demuxed(self, dts_ns: int) -> None:
        """Timing "dts": the dts of the next packet, in decode order, where the frames come out in the same order."""
        self._dts.append(dts_ns)

    def refused(self) -> None:
        """Timing "dts": the packet last given to `demuxed` gives no frame (its decoder refused it), so its dts
        times none: the next frame is the next packet's."""
        if self._dts:
            self._dts.pop()

    def stamp(self, frame: DecodedFrame) -> list[DecodedFrame]:
        """The frames `frame` settles, timed, in order: a frame held for a leap, when there is one, then `frame`
        itself, unless it leaps ahead and waits for the next one."""
        if self.timing == "index":
            return [self._settle(frame, self._at(self.count))]
        if self.timing == "arrival":
            return [self._settle(frame, self.arrived())]
        if self.timing == "dts":  # a frame its packets did not time (none should come) goes on by one period
            return [self._settle(frame, self._dts.popleft() if self._dts else (self._last or 0) + self.frame_ns)]
        held, self._held = self._held, None
        settled = []
        if held is not None:
            after = frame.pts_ns + self._offset
            if frame.pts_ns != PTS_UNKNOWN and self._last < after < held.pts_ns - self.frame_ns:
                # the line before the leap goes on: the leap was one bad pts
                held.pts_ns = self._last + min(self._step, (after - self._last) // 2)
                self.repaired += 1
            elif frame.pts_ns != PTS_UNKNOWN and _about(after - held.pts_ns, leap := held.pts_ns - self._last):
                self._step = leap  # kept, and the next frame steps about as far: the rate fell (night mode)
            settled.append(self._settle(held, held.pts_ns))
        if frame.pts_ns == PTS_UNKNOWN:
            self.repaired += self._last is not None
            return settled + [self._settle(frame, 0 if self._last is None else self._last + self.frame_ns)]
        pts = self._join(frame.pts_ns)
        if self._last is not None:
            if pts > self._last + LEAP_STEPS * self._step:
                frame.pts_ns, self._held = pts, frame
                return settled
            self._step = max(self.frame_ns, pts - self._last)
        return settled + [self._settle(frame, pts)]

    def flush(self) -> list[DecodedFrame]:
        """At the pass's end: the frame held for a leap, if any, with its leap kept (no frame came to repair it)."""
        held, self._held = self._held, None
        return [] if held is None else [self._settle(held, held.pts_ns)]

    def _join(self, source: int) -> int:
        """Our pts for the source's pts `source`, joining a discontinuity one period after the last frame."""
        pts = source + self._offset
        back = self._last is not None and pts < self._last - self.frame_ns
        if back:  # where the source's line was left: (its pts there, ours)
            self._left = (self._last - self._offset, self._last)
        # the line left coming back (an ad break ended, one bad pts), about where it would be by now
        returned = (self._left is not None and pts > self._last + self.frame_ns
                    and abs(source - self._left[0] - (self._last - self._left[1])) <= RETURN_SLACK_NS)
        if back or returned:  # a discontinuity: joined one period after the last frame, not nudged
            self._offset += self._last + self.frame_ns - pts
            pts = self._last + self.frame_ns
            self._left = self._left if back else None
            self.repaired += 1
        return pts

    def _settle(self, frame: DecodedFrame, pts: int) -> DecodedFrame:
        if self._last is not None and pts <= self._last:
            pts = self._last + 1
            self.repaired += 1
        frame.pts_ns = pts
        self._last = pts
        self.count += 1
        return frame


def _about(step: int, leap: int) -> bool:
    """A step after a leap about as long as the leap: from half to twice it."""
    return leap // 2 <= step <= 2 * leap


class Arrivals:
    """When each packet of a live stream was read, so that a frame is timed from its own packet's arrival rather
    than from when the decoder let it go: NVDEC holds a picture until the next packet is in (and a stream with
    B-frames longer, in any decoder), which belongs in the frame's latency."""

    KEPT = 128
    """Packets remembered at most: far more than any decoder holds."""

    def __init__(self, now: Callable[[], int] = time.time_ns):
        self._now = now
        self._by_pts: dict[int, int] = {}
        self._last: int | None = None

    def read(self, pts_ns: int | None) -> None:
        """A packet was read now; `pts_ns` its pts, None when it has none."""
        self._last = self._now()
        if pts_ns is not None:
            self._by_pts[pts_ns] = self._last
            while len(self._by_pts) > self.KEPT:
                del self._by_pts[next(iter(self._by_pts))]

    def of(self, pts_ns: int) -> int | None:
        """When the packet of the frame with pts `pts_ns` (the decoder's) was read; that of the last packet read when
        no packet had that pts. Frames come in display order, so packets before it are forgotten."""
        arrived = self._by_pts.pop(pts_ns, None)
        for earlier in [pts for pts in self._by_pts if pts < pts_ns]:
            del self._by_pts[earlier]
        return self._last if arrived is None else arrived

