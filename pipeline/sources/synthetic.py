"""A live camera that needs no network or files: the embedded synthetic world (`samples/world`).

    synthetic://plaza?seed=3&fps=15&size=1280x720[&frames=300][&realtime=0]

Frame `i` has `pts_ns = round(i * 1e9 / fps)`, so ground truth lines up by `round(pts_ns * fps / 1e9)`.
With `realtime=1` (default) frames are released on the wall clock like a camera; if rendering falls
behind by more than a frame, the late frames are skipped (a live camera does not wait), counted in
`skipped`. With `realtime=0` frames come as fast as they are asked for and the reader is not live.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from pipeline.errors import ConfigError
from pipeline.sources.reader import DecodedFrame


class SyntheticReader:
    """Reader for `synthetic://` URLs; one pass starts at frame 0. Raises ConfigError for a bad URL."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic):
        from samples.world.url import parse_synthetic_url  # noqa: PLC0415 - the world is optional at import

        try:
            self.spec = parse_synthetic_url(url)
        except ValueError as exc:
            raise ConfigError(f"synthetic stream: {exc}") from None
        self.url = url
        self.live = self.spec.realtime
        self.skipped = 0
        self._clock = clock
        self._stop = threading.Event()

    def frames(self) -> Iterator[DecodedFrame]:
        """Yield frames until `frames=` is reached or `close()` is called. image: (H, W, 3) uint8 RGB."""
        from samples.world.render import World  # noqa: PLC0415 - numpy-heavy, loaded on first use

        spec = self.spec
        world = World(spec.scene, spec.seed, spec.size, spec.fps)
        start = self._clock()
        index = 0
        while not self._stop.is_set() and (spec.frames is None or index < spec.frames):
            if spec.realtime:
                index = self._pace(start, index)
                if self._stop.is_set() or (spec.frames is not None and index >= spec.frames):
                    return
            image, _ = world.render(index)
            yield DecodedFrame(image, int(round(index * 1e9 / spec.fps)), spec.size[0], spec.size[1])
            index += 1

    def _pace(self, start: float, index: int) -> int:
        """Wait until frame `index` is due; if more than one frame late, jump to the frame due now."""
        due = start + index / self.spec.fps
        now = self._clock()
        if now < due:
            self._stop.wait(due - now)
            return index
        current = int((now - start) * self.spec.fps)
        if current > index + 1:
            self.skipped += current - index
            return current
        return index

    def close(self) -> None:
        """Stop `frames()` at the next frame boundary; safe from any thread, idempotent."""
        self._stop.set()
