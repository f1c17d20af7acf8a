"""Frame sinks and a stage for tests of the running pipeline."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Callable

from pipeline.sinks.base import BaseSink
from pipeline.types import Event, FrameResult


class RecordingSink(BaseSink):
    """Keeps, per stream, the `seq` of every frame it got, its track ids, its events, and whether it started and
    ended."""

    def __init__(self, name: str = "recording"):
        self.name = name
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.track_ids: dict[str, list[int]] = defaultdict(list)  # every detection's, in frame order
        self.events: dict[str, list[Event]] = defaultdict(list)
        self.started: list[str] = []
        self.ended: list[str] = []
        self.closed = False
        self._cond = threading.Condition()

    def on_stream_start(self, stream_id: str, url: str) -> None:
        with self._cond:
            self.started.append(stream_id)
            self._cond.notify_all()

    def on_frame(self, result: FrameResult) -> None:
        with self._cond:
            self.seqs[result.frame.stream_id].append(result.frame.seq)
            self.track_ids[result.frame.stream_id].extend(result.detections.to_host().track_id.tolist())
            self.events[result.frame.stream_id].extend(result.events)
            self._cond.notify_all()

    def on_events(self, stream_id: str, events: list[Event]) -> None:
        with self._cond:
            self.events[stream_id].extend(events)

    def on_stream_end(self, stream_id: str) -> None:
        with self._cond:
            self.ended.append(stream_id)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, condition: Callable[[RecordingSink], bool], timeout: float) -> bool:
        """True once `condition(self)` holds (checked whenever something arrives), False after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class HangingSink(BaseSink):
    """A sink whose `on_frame` blocks until `release()` (a database that stopped answering); `events`
    counts the events it got, with frames or without (those of frames it had to drop)."""

    def __init__(self, name: str = "hanging"):
        self.name = name
        self.calls = 0
        self.events = 0
        self._released = threading.Event()

    def on_frame(self, result: FrameResult) -> None:
        self.calls += 1
        self.events += len(result.events)
        self._released.wait()

    def on_events(self, stream_id: str, events: list[Event]) -> None:
        self.events += len(events)

    def release(self) -> None:
        self._released.set()


class MarkEveryNth:
    """A `stages:` plugin: an event of kind `mark` on every `every`-th frame of its stream (counted from 1).
    clip: the event asks the media sink for a snapshot and a clip."""

    def __init__(self, stream_id: str, every: int = 10, clip: bool = False):
        self.every, self.clip = every, clip  # stream_id: each event's moment names the stream
        self.count = 0

    def __call__(self, result: FrameResult) -> list[Event]:
        self.count += 1
        if self.count % self.every:
            return []
        return [result.moment.event("mark", "mark", -1, -1,
                                    {"seq": result.frame.seq, "clip": self.clip, "snapshot": self.clip})]
