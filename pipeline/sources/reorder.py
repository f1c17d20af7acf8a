"""Whether a camera's H.264 decoder may be told that its stream never reorders pictures, decided from the packets'
timestamps as they come.

NVDEC hands a picture on only once it knows that no earlier one can follow. An SPS that does not say how far the
stream reorders makes it keep a whole decoded picture buffer back (docs/BENCHMARKS.md, "What a live camera adds").
`ReorderWatch` lets the decoder declare such an SPS free of reordering (`h264.declaring_no_reorder`) and plans what
to decode when the timestamps say otherwise:

- within `TRIAL_PACKETS` of a declared SPS, a timestamp going back (or a packet without one, which cannot tell)
  means the stream reorders: decode again from that SPS as the stream says (the packets since are kept), without
  handing on again the pictures up to the last one handed on (those behind it are dropped: a few, once);
- later, two timestamps going back within `REORDER_SPAN` packets, each by less than `REORDER_SPAN` steps forward,
  mean the same (an encoder that starts B-frames late): the SPS is no longer declared, and the decoder starts again
  at the next one; a single step back, or a larger one, is the camera's clock, not reordering.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.sources.h264 import declaring_no_reorder
from pipeline.types import pts_to_ns

log = logging.getLogger(__name__)

TRIAL_PACKETS = 32
"""Packets after a declared SPS kept for decoding again: a stream with B-frames shows a timestamp going back within
its first few (H.264 reorders at most 16 pictures)."""

REORDER_SPAN = 16
"""After the trial, two steps back within this many packets, each at most this many times the step forward before it,
are reordering; anything else is a clock's leap."""


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
        self._step_ns = 0
        self._shown_ns: int | None = None
        self._restart_at_sps = False
        self._rewritten = False  # the current SPS was declared free of reordering
        self._backs: list[int] = []  # the packet counts of recent steps back, after the trial
        self._count = 0

    def read(self, unit: memoryview, sps: bytes | None, pts: int | None, time_base, discard: bool) -> Plan:
        """The plan for `unit`, an Annex-B access unit whose SPS (if it carries one) is `sps`."""
        if not self.declaring and not self._restart_at_sps:  # a file read for throughput, HEVC, or a stream that reorders
            return Plan(feed=[(unit, pts, discard)])
        restart = ""
        if sps is not None and (sps != self._sps or self._restart_at_sps):
            restart, self._restart_at_sps = ("drain" if self._restart_at_sps else ""), False
            self._sps, self._last_ns, self._backs = sps, None, []  # a new sequence may start its timestamps again
            self._rewritten = self.declaring and self._declaration(sps) is not None
            self._trial = [] if self._rewritten else None
        at = None if pts is None else pts_to_ns(pts, time_base)
        self._count += 1
        if self._trial is not None and (at is None or (self._last_ns is not None and at < self._last_ns)):
            return self._again(bytes(unit), pts, discard, time_base)
        if at is not None:
            if self._last_ns is not None and at < self._last_ns:
                if self._rewritten and self.declaring and self._reorders_late(self._last_ns - at):
                    log.info("%s: the stream reorders its pictures after all; its SPS is taken as it is from the "
                             "next one on", self.label)
                    self.declaring, self._restart_at_sps = False, sps is None
                    restart = restart or ("drain" if sps is not None else "")  # this packet starts a sequence
            elif self._last_ns is not None:
                self._step_ns = at - self._last_ns
            self._last_ns = at
        if self._trial is not None:
            self._trial.append((bytes(unit), pts, discard))
            if len(self._trial) > TRIAL_PACKETS:
                self._trial = None
        if self.declaring and sps is not None and (declared := self._declaration(sps)) is not None:
            return Plan(feed=[(bytes(unit).replace(sps, declared, 1), pts, discard)], restart=restart)
        return Plan(feed=[(unit, pts, discard)], restart=restart)

    def _reorders_late(self, back_ns: int) -> bool:
        """A step back after the trial: reordering when it is the second within `REORDER_SPAN` packets, each at
        most `REORDER_SPAN` of the step forward before it (B-frames step back every few packets; a clock once)."""
        if back_ns > REORDER_SPAN * self._step_ns:
            return False
        self._backs = [n for n in self._backs if self._count - n < REORDER_SPAN] + [self._count]
        return len(self._backs) >= 2

    def shown(self, pts_ns: int) -> None:
        """A picture was handed on (while declaring, the last one matters)."""
        if self.declaring:
            self._shown_ns = pts_ns

    def end(self) -> None:
        """The stream's pass ended (the decoder drained): the next starts its timestamps and its trial afresh."""
        self._sps = self._trial = self._last_ns = self._shown_ns = None
        self._step_ns, self._restart_at_sps, self._rewritten, self._backs = 0, False, False, []

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
