"""What a per-stream stage is.

One instance per stream (tracker, zone/line analytics with alert rules, a `stages:` plugin), called on
that stream's frames in order on one stage worker, never two at once. `process` may set `result.tracks`
and the detections' track ids (the tracker does) and append to `result.events`; it holds that stream's
state only.
"""
from __future__ import annotations

from typing import Protocol

from pipeline.types import Event, FrameResult, Moment


class StreamStage(Protocol):
    name: str  # what its failures are counted under

    def process(self, result: FrameResult) -> None: ...

    def end(self, at: Moment) -> list[Event]:
        """The stream ended (or was removed) after its frame captured `at`: close open state (tracks, zone
        visits), return final events (made `at.event(...)`)."""
        ...
