"""`fake://` streams: a bright square moving over a dark picture, made on the CPU with no files or network."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from pipeline.plugins import SourceKind
from pipeline.sources.reader import DecodedFrame
from pipeline.types import pts_to_ns

SQUARE = 8
"""Side of the square in pixels."""


@dataclass(frozen=True)
class FakeSpec:
    fps: float = 25.0
    frames: int | None = None
    size: tuple[int, int] = (64, 48)
    live: bool = True
    stall_at: int | None = None
    stall_s: float = 0.0


def parse_fake_url(url: str) -> FakeSpec:
    """`fake://NAME?fps=25&frames=N&size=WxH&live=1&stall_at=N&stall_s=S`; ValueError naming the URL and
    what is wrong."""
    query = dict(parse_qsl(urlsplit(url).query))
    unknown = set(query) - {"fps", "frames", "size", "live", "stall_at", "stall_s"}
    if unknown:
        raise ValueError(f"{url}: unknown key(s) {sorted(unknown)}; known: fps, frames, size, live, stall_at, stall_s")
    try:
        width, height = (int(v) for v in query.get("size", "64x48").split("x"))
        spec = FakeSpec(float(query.get("fps", 25)), int(query["frames"]) if "frames" in query else None,
                        (width, height), query.get("live", "1") not in ("0", "false", "no"),
                        int(query["stall_at"]) if "stall_at" in query else None, float(query.get("stall_s", 0)))
    except ValueError as exc:
        raise ValueError(f"{url}: {exc}") from None
    if spec.fps <= 0 or min(spec.size) < 2 * SQUARE or spec.stall_s < 0:
        raise ValueError(f"{url}: fps must be > 0, stall_s >= 0 and size at least {2 * SQUARE}x{2 * SQUARE}")
    return spec


def square_at(index: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the square in frame `index`: one pixel per frame to the right, wrapping."""
    width, height = size
    return index % (width - SQUARE), (height - SQUARE) // 2


class FakeReader:
    """One pass over a `fake://` stream. Live streams are paced by the wall clock; others come as fast as asked.
    With `stall_at`, the camera hangs before that frame for `stall_s` seconds, then goes on at its pace (a
    source with no read timeout of its own: only the worker's STALLED state shows it)."""

    live: bool

    def __init__(self, url: str):
        self.spec = parse_fake_url(url)
        self.live = self.spec.live
        self._stop = threading.Event()

    def frames(self) -> Iterator[DecodedFrame]:
        spec = self.spec
        rate = Fraction(spec.fps).limit_denominator(1000)
        start = time.monotonic()
        index = 0
        while not self._stop.is_set() and (spec.frames is None or index < spec.frames):
            if index == spec.stall_at:
                self._stop.wait(spec.stall_s)
                start += spec.stall_s
            if spec.live:
                self._stop.wait(max(0.0, start + index / spec.fps - time.monotonic()))
            yield DecodedFrame(self.picture(index), pts_to_ns(index, 1 / rate), *spec.size)
            index += 1

    def picture(self, index: int) -> np.ndarray:
        width, height = self.spec.size
        image = np.full((height, width, 3), 20, np.uint8)
        x, y = square_at(index, self.spec.size)
        image[y : y + SQUARE, x : x + SQUARE] = 235
        return image

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self._stop.set()


def _open(config, packet_tap) -> FakeReader:
    return FakeReader(config.url)


FAKE_SOURCE = SourceKind("fake", _open, live=lambda url: parse_fake_url(url).live, check=parse_fake_url)
