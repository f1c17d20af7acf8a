"""Whether a camera's H.264 decoder may be told that its stream never reorders pictures, decided from the packets'
timestamps as they come.

NVDEC hands a picture on only once it knows that no earlier one can follow. An SPS that does not say how far the
stream reorders makes it keep a whole decoded picture buffer back (docs/BENCHMARKS.md, "What a live camera adds").
`ReorderWatch` lets the decoder declare such an SPS free of reordering (`h264.declaring_no_reorder`) and plans what
to decode when the timestamps say otherwise:

- within `TRIAL_PACKETS` of a declared SPS, a timestamp going back by at most `REORDER_SPAN` steps forward (or a
  packet without one, which cannot tell) means the stream reorders: decode again from that SPS as the stream says
  (the packets since are kept), without handing on again the pictures up to the last one handed on (those behind it
  are dropped: a few, once);
- later, two timestamps going back within `REORDER_SPAN` packets, each by as little, mean the same (an encoder that
  starts B-frames late): the SPS is no longer declared, and the decoder starts again at the next IDR picture (the
  decoder puts the stream's parameter sets in front when that picture comes without them);
- a step back by more, or a single one after the trial, is the camera's clock, not reordering.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.sources.h264 import declaring_no_reorder
from pipeline.sources.nal import Headers
from pipeline.types import pts_to_ns

log = logging.getLogger(__name__)

TRIAL_PACKETS = 32
"""Packets after a declared SPS kept for decoding again: a stream with B-frames shows a timestamp going back within
its first few (H.264 reorders at most 16 pictures)."""

REORDER_SPAN = 16
"""A step back by more than this many times the step forward before it is a clock's leap, never reordering; after
the trial, reordering is two steps back within this many packets."""


@dataclass
class Plan:
    """What the decoder does with one packet."""

    feed: list[tuple[bytes | memoryview, int | None, bool]]
    """Access units to decode in order: (data, pts in the stream's time base, discard)."""
    restart: str = ""
    """"" none; "drain": hand on what the decoder holds, then a fresh one; "drop": a fresh one, what it held
    comes again from `feed`."""
    floor_ns: int | None = None
    """After decoding again: pictures up to this pts (ns) were handed on already or belong before those; the
    decoder drops such pictures (at most `TRIAL_PACKETS + REORDER_SPAN`) until one above it comes."""


class ReorderWatch:
    """One H.264 stream's packets, as a camera's decoder reads them; `eligible`: its container does not announce
    B-frames (and it is a camera's). Tell it each picture handed on (`shown`) and each end of a pass (`end`)."""

    def __init__(self, label: str, eligible: bool):
        self.label = label
        self.declaring = eligible
        self._declared: dict[bytes, bytes | None] = {}  # an SPS as read -> as declared (None: nothing to declare)
        self._sps: bytes | None = None
        self._trial: list[tuple[bytes, int | None, bool]] | None = None
        self._last_ns: int | None = None
        self._steps: list[int] = []  # the last two steps forward (ns)
        self._shown_ns: int | None = None
        self._restart_at_idr = False  # the declaration ended: a fresh decoder at the next IDR picture
        self._rewritten = False  # the current SPS was declared free of reordering
        self._backs: list[int] = []  # the packet counts of recent steps back, after the trial
        self._count = 0

    def read(self, unit: memoryview, head: Headers, pts: int | None, time_base, discard: bool) -> Plan:
        """The plan for `unit`, an Annex-B access unit with the headers `head`."""
        if not self.declaring and not self._restart_at_idr:  # a file read for throughput, HEVC, or a stream that reorders
            return Plan(feed=[(unit, pts, discard)])
        sps = head.sps
        if self._restart_at_idr:
            return self._restarting(unit, head, pts, discard)
        if sps is not None and sps != self._sps:
            self._sps, self._last_ns, self._backs = sps, None, []  # a new sequence may start its timestamps again
            self._rewritten = self._declaration(sps) is not None
            self._trial = [] if self._rewritten else None
        at = None if pts is None else pts_to_ns(pts, time_base)
        self._count += 1
        back = 0 if at is None or self._last_ns is None or at >= self._last_ns else self._last_ns - at
        # a step back by more than REORDER_SPAN steps forward is the clock's leap (the smaller of the last two: one
        # timestamp stamped far ahead must not make the next one's return look small)
        reordering = back and (not self._steps or back <= REORDER_SPAN * min(self._steps))
        if self._trial is not None and (at is None or reordering):
            return self._again(bytes(unit), pts, discard, time_base)
        restart = ""
        if at is not None:
            if back:
                if reordering and self._rewritten and self._reorders_late():
                    log.info("%s: the stream reorders its pictures after all; its SPS is taken as it is from the "
                             "next IDR picture on", self.label)
                    self.declaring, self._restart_at_idr = False, not head.idr
                    restart = "drain" if head.idr else ""  # a fresh decoder can start at this packet
            elif self._last_ns is not None and at > self._last_ns:
                self._steps = [*self._steps[-1:], at - self._last_ns]
            self._last_ns = at
        if self._trial is not None:
            self._trial.append((bytes(unit), pts, discard))
            if len(self._trial) > TRIAL_PACKETS:
                self._trial = None
        if restart:
            return Plan(feed=[(unit, pts, discard)], restart=restart)
        if self.declaring:
            return Plan(feed=[(self._as_declared(unit, sps), pts, discard)])
        return Plan(feed=[(unit, pts, discard)])

    def _restarting(self, unit: memoryview, head: Headers, pts: int | None, discard: bool) -> Plan:
        """The declaration ended: the decoder, which still runs on the declared SPS, keeps it until the next IDR
        picture, where a fresh one starts (a new SPS restarts the decoder anyway, as a resolution change does)."""
        if head.sps is not None and head.sps != self._sps:
            self._restart_at_idr, self._sps = False, head.sps
            return Plan(feed=[(unit, pts, discard)])
        if not head.idr:
            return Plan(feed=[(self._as_declared(unit, head.sps), pts, discard)])
        self._restart_at_idr = False
        return Plan(feed=[(unit, pts, discard)], restart="drain")

    def _as_declared(self, unit: memoryview, sps: bytes | None) -> bytes | memoryview:
        """`unit` with its SPS, if it carries one, declared free of reordering (when there is something to declare)."""
        if sps is None or (declared := self._declaration(sps)) is None:
            return unit
        return bytes(unit).replace(sps, declared, 1)

    def _reorders_late(self) -> bool:
        """A step back small enough to be reordering, after the trial: it is, when it is the second within
        `REORDER_SPAN` packets (B-frames step back every few packets; a clock once)."""
        self._backs = [n for n in self._backs if self._count - n < REORDER_SPAN] + [self._count]
        return len(self._backs) >= 2

    def shown(self, pts_ns: int) -> None:
        """A picture was handed on (while declaring, the last one matters)."""
        if self.declaring:
            self._shown_ns = pts_ns

    def end(self) -> None:
        """The stream's pass ended (the decoder drained): the next starts its timestamps and its trial afresh. A fresh
        decoder still due (the declaration ended) comes at the next pass's first IDR picture: the decoder kept for it
        runs on the declared SPS."""
        self._trial = self._last_ns = self._shown_ns = None
        if not self._restart_at_idr:
            self._sps = None
        self._steps, self._rewritten, self._backs = [], False, []

    def _declaration(self, sps: bytes) -> bytes | None:
        if sps not in self._declared:
            self._declared[sps] = declaring_no_reorder(sps)
        return self._declared[sps]

    def _again(self, unit: bytes, pts: int | None, discard: bool, time_base) -> Plan:
        log.info("%s: the stream reorders its pictures (B-frames%s); decoding again from its SPS as it says",
                 self.label, "" if pts is not None else ", or no timestamps to tell")
        self.declaring = False
        replay, self._trial = [*(self._trial or []), (unit, pts, discard)], None
        if pts is not None:
            self._last_ns = pts_to_ns(pts, time_base)
        return Plan(feed=replay, restart="drop", floor_ns=self._shown_ns)
