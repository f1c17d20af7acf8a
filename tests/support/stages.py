"""`stages:` plugins for tests: one that fails on every frame, one that returns a malformed event."""
from __future__ import annotations

from dataclasses import replace


class Exploding:
    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        raise RuntimeError(f"{self.stream_id}: broken plugin")


class NoClassId:
    """Every 10th frame an event whose class_id is None (made by hand, not by `Moment.event`)."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        if result.frame.seq % 10 == 9:
            return [replace(result.moment.event("odd", "mark", -1, 0, {}), class_id=None)]
        return []
