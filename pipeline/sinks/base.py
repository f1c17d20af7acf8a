"""What a sink is. Sinks run off the inference thread, per stream in frame order.

Two kinds:
- `StreamStage`: one instance per stream (tracker, zone/line analytics, alert rules); it may change
  `result.detections.track_id` and append to `result.events`. It holds that stream's state only.
- `Sink`: one instance per pipeline (storage, JSONL, media, MOT export); `on_frame` is called from
  several sink worker threads (never two at once for the same stream), so it must be thread-safe
  across streams. Event outputs (webhook, MQTT, event log) sit behind the durable outbox instead.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pipeline.types import Event, FrameResult


class StreamStage(Protocol):
    def process(self, result: FrameResult) -> None: ...

    def end(self, result_ts_ns: int) -> list[Event]:
        """The stream ended: close open state (tracks, zone visits) and return final events."""
        ...


class Sink(Protocol):
    name: str

    def open(self) -> None: ...

    def on_frame(self, result: FrameResult) -> None: ...

    def on_stream_end(self, stream_id: str) -> None: ...

    # Optional: `on_events(stream_id, events)` receives events that belong to no frame (the zone
    # exits a stage closes when its stream ends); storage implements it, frame-based sinks need not.

    def close(self) -> None:
        """Flush everything still buffered; called once after the last frame."""
        ...


class EventOutput(Protocol):
    """A destination the outbox delivers events to, one at a time, in order."""

    name: str

    def deliver(self, event: Event) -> None:
        """Deliver or raise `SinkError`; the outbox keeps the event and retries with backoff."""
        ...

    def close(self) -> None: ...


class ClipRecorder(Protocol):
    """What the media sink needs to get an event clip; `pipeline.sources.packets.PacketRings` is one,
    as the packets are the sources' business."""

    def record_clip(self, stream_id: str, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: Callable[[Path, str | None], None] | None = None) -> bool:
        """Cut `stream_id` from `before_s` seconds before `ts_ns` (ns) to `after_s` after it into `path`;
        False when that stream has no packets to cut from. `on_done(path, error_or_None)` is called
        once when the clip is written or has failed, possibly from another thread."""
        ...
