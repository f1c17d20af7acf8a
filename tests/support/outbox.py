"""Events and a recording output for the outbox's unit tests (tests/unit/sinks/outputs/)."""
from __future__ import annotations

import threading

from pipeline.backoff import Backoff
from pipeline.errors import SinkError
from pipeline.types import Event, Moment

FAST = Backoff(min_s=0.01, max_s=0.05)


def make_events(n: int, stream: str = "cam-1", start: int = 0) -> list[Event]:
    return [Moment("run-1", stream, i * 1_000_000, 1_700_000_000 * 10**9 + i * 1_000_000).event(
        "door", "enter", i, 0, {"zone": "door", "i": i}) for i in range(start, start + n)]


class RecordingOutput:
    """Records delivered events; fails while `failing` is set."""

    max_retries = None

    def __init__(self, name: str = "rec"):
        self.name = name
        self.delivered: list[Event] = []
        self.attempts = 0
        self.failing = threading.Event()
        self.closed = False

    def deliver(self, event: Event) -> None:
        self.attempts += 1
        if self.failing.is_set():
            raise SinkError("receiver down")
        self.delivered.append(event)

    def close(self) -> None:
        self.closed = True
