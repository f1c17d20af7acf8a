"""What an output is. Two kinds, both registered as `sinks:` types (`pipeline.plugins.OutputKind`):

- `Sink`: gets every frame's result, per stream in frame order, from a bounded queue and a thread of
  its own (storage, detections JSONL, media, MOT export); a slow one never holds back the stages of
  live cameras (its `overflow` setting says what it drops). Its callbacks for one stream never run
  at once, but it serves every stream.
  A `Sink` that writes files for events may say where, before it writes them: `files_for(event)`
  (optional) returns their paths by role (`snapshot`, `clip`), and the event names them (the media sink does).
  `needs_picture(result)` says whether its `on_frame` reads that frame's picture: a frame it does not need is
  queued without it, so a sink's backlog holds no decoded pictures (a CPU decoder's pool of pictures grows to
  the most it ever had out at once and keeps them while it lives).
- `EventOutput`: gets events from the durable outbox, one at a time, in order (webhook, MQTT, event log).
  A `Sink` may offer one as its `event_output` (storage does, for its events table): the outbox feeds it
  as well, so the events it keeps survive a crash the way the outputs' do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from pipeline.config.models import AlertRule
from pipeline.types import Event, FrameResult, Run


class Sink(Protocol):
    name: str
    event_output: EventOutput | None  # events from the outbox (optional: None when absent)

    def open(self) -> None:
        """Before the first stream: connect, create folders; raise `SinkError` when it cannot."""
        ...

    def on_stream_start(self, stream_id: str, url: str) -> None:
        """The stream starts. A sink added while streams run is told of each with `on_stream_joined(stream_id, url)`
        instead where it has that method (optional: a file the stream's start would begin anew is appended to)."""
        ...

    def on_frame(self, result: FrameResult) -> None: ...

    def needs_picture(self, result: FrameResult) -> bool: ...

    def on_events(self, stream_id: str, events: list[Event]) -> None:
        """Events that belong to no frame (the zone exits a stage closes when its stream ends)."""
        ...

    def on_stream_end(self, stream_id: str) -> None: ...

    def close(self) -> None:
        """Flush everything still buffered; called once after the last frame."""
        ...

    def stats(self) -> dict: ...


class BaseSink:
    """No-op callbacks for a `Sink` that needs only some of them."""

    name = "sink"
    event_output = None

    def open(self) -> None:
        pass

    def on_stream_start(self, stream_id: str, url: str) -> None:
        pass

    def on_frame(self, result: FrameResult) -> None:
        pass

    def needs_picture(self, result: FrameResult) -> bool:
        """True unless the sink says otherwise: one that never reads pictures returns False."""
        return True

    def on_events(self, stream_id: str, events: list[Event]) -> None:
        pass

    def on_stream_end(self, stream_id: str) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {}


class EventOutput(Protocol):
    """A destination the outbox delivers events to, one at a time, in order. max_retries: attempts before
    an event is given up (kept in the outbox's dead letters); None retries until it is delivered."""

    name: str
    max_retries: int | None

    def deliver(self, event: Event) -> None:
        """Deliver or raise `SinkError`; the outbox keeps the event and retries with backoff."""
        ...

    def close(self) -> None: ...


class ClipRecorder(Protocol):
    """Cuts event clips from the packets its sources keep (`pipeline.sources`); what a media sink asks for."""

    def record_clip(self, stream_id: str, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: Callable[[Path, str | None], None] | None = None) -> bool:
        """Write `path` from `before_s` ahead of `ts_ns` to `after_s` after it (later, once the packets have
        arrived), then call `on_done(path, error or None)`. False when the stream has no packets to cut."""
        ...


@dataclass(frozen=True)
class OutputContext:
    """What an output factory may need beyond its own config entry. run: the run it serves (storage records it).
    fence: in a fleet, what PostgreSQL storage asks whether a camera's rows may still be written
    (`pipeline.cluster.fencing.Fence`)."""

    class_names: list[str]
    alerts: list[AlertRule]
    run: Run
    clips: ClipRecorder | None = None
    fence: Any = None
