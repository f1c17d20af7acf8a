"""Frames, streams, lanes and a clock a test moves, for the aligned buffer's unit tests (tests/unit/align/)."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import LaneConfig, StreamConfig
from pipeline.types import Frame

MS = 1_000_000
IMAGE = np.zeros((4, 4, 3), np.uint8)


class FakeClock:
    """Monotonic nanoseconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += round(ms * MS)


def live(sid: str, lane: str = "default", ring: int = 8) -> StreamConfig:
    return StreamConfig(id=sid, url=f"rtsp://127.0.0.1:8554/{sid}", lane=lane, ring_size=ring)


def file(sid: str, lane: str = "default", ring: int = 8) -> StreamConfig:
    return StreamConfig(id=sid, url=f"/clips/{sid}.mp4", lane=lane, ring_size=ring)


def frame(sid: str, seq: int) -> Frame:
    return Frame(sid, seq, seq * 40 * MS, 0, IMAGE, 4, 4)


def ids(batch) -> list[tuple[str, int]]:
    return [(f.stream_id, f.seq) for f in batch.frames]


def lane(name: str = "default", **kw) -> LaneConfig:
    return LaneConfig(name=name, **{"max_batch": 4, "max_wait_ms": 30, **kw})
