"""What the main process and a decode process say to each other over their pipe, one type per message.

Main -> child: `AddStream`, `Control` (credits, returned slots, stops, merged per send), `RecordClip`,
`ForgetStream`, `Exit`. Child -> main: `FrameMsg`, `Stats`, `Ended`, `ClipDone`. Streams are named by
their index in the child (unique for the child's lifetime), never by id, so a stream removed and added
again under the same id is a different stream.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from pipeline.config.models import StreamConfig


class AddStream(NamedTuple):
    """Start decoding a stream. resume: `(next seq, last pts_ns, frame period ns, last wall_ns, last epoch)` of
    the same stream in a child that died (seq, pts and epoch go on from there, as after a reconnect)."""

    index: int
    config: StreamConfig
    decoder: str
    packet_ring_s: float
    resume: tuple[int, int, int, int, int] | None = None


class Control(NamedTuple):
    """credits: per stream index, frames the main process' ring has room for again (files only).
    freed: (index, pool generation, slot) the main process has copied. stops: indices to stop."""

    credits: dict[int, int]
    freed: list[tuple[int, int, int]]
    stops: list[int]


class RecordClip(NamedTuple):
    index: int
    request: int
    ts_ns: int
    before_s: float
    after_s: float
    path: str


class ForgetStream(NamedTuple):
    """The stream has ended and is gone downstream: write its pending clips, drop its packets, its worker
    and its device slots."""

    index: int


class Exit(NamedTuple):
    """Stop every stream and exit once they have ended."""


class FrameMsg(NamedTuple):
    """payload: a `SlotRef` (NV12 in a device slot) or the host RGB array itself. frame_index, epoch: where the
    frame is in its source (`Frame.index`, `Frame.epoch`)."""

    index: int
    seq: int
    pts_ns: int
    wall_ns: int
    width: int
    height: int
    pixel_format: str
    payload: Any
    frame_index: int
    epoch: int


class Stats(NamedTuple):
    by_index: dict[int, dict]


class Ended(NamedTuple):
    index: int
    stats: dict


class ClipDone(NamedTuple):
    request: int
    path: str
    error: str | None
