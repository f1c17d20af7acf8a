"""A FrameSink for source tests that keeps every frame (the real one is the align engineer's AlignedBuffer)."""
from __future__ import annotations

import threading
import time


class CollectingSink:
    """A FrameSink that keeps every frame; `room` limits how many puts succeed (None = all)."""

    def __init__(self, room: int | None = None):
        self.frames = []
        self.ended: list[str] = []
        self.refused = 0
        self.room = room
        self._cond = threading.Condition()

    def put(self, frame, timeout: float) -> bool:
        with self._cond:
            if self.room is not None and len(self.frames) >= self.room:
                self.refused += 1
                self._cond.wait(timeout)
                if self.room is not None and len(self.frames) >= self.room:
                    return False
            self.frames.append(frame)
            self._cond.notify_all()
            return True

    def end_stream(self, stream_id: str) -> None:
        with self._cond:
            self.ended.append(stream_id)
            self._cond.notify_all()

    def open_room(self, room: int | None) -> None:
        with self._cond:
            self.room = room
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """True once at least `count` frames arrived, False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.frames) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
