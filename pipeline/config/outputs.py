"""The built-in `sinks:` types, registered as outputs (`pipeline.plugins.register_output`).

Frame sinks (storage, detections JSONL, media, MOT export) get every frame's result through a bounded
queue of their own; `overflow` says what happens to a live camera's frames when the sink falls behind
(files always wait: they lose nothing). Event outputs (webhook, MQTT, the events JSONL) are fed by the
durable outbox instead. A plugin adds a type the same way, with its own model and factory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pipeline import plugins


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameSinkOptions(Strict):
    """What every frame sink shares: its queue."""

    queue_size: int = Field(256, ge=1, description="frame results waiting for this sink")
    overflow: Literal["drop_oldest", "block"] = Field(
        "drop_oldest",
        description="when the queue is full: drop_oldest drops a live camera's oldest waiting frame (counted per "
        "stream), so a slow sink never holds back detection; block makes live frames wait too. File streams "
        "always wait. Frames that carry events are never dropped",
    )


class SqliteStorage(FrameSinkOptions):
    type: Literal["sqlite"]
    path: Path = Path("runs/detections.db")
    batch_size: int = Field(500, ge=1, description="rows per transaction; larger is faster, loses more on a crash")
    flush_interval_s: float = Field(0.5, gt=0)
    retention_days: float | None = None


class PostgresStorage(FrameSinkOptions):
    type: Literal["postgres"]
    dsn: str = Field(description="postgresql://user@host/db; the password belongs in PGPASSWORD, not here")
    batch_size: int = Field(500, ge=1)
    flush_interval_s: float = Field(0.5, gt=0)
    retention_days: float | None = None


class JsonlOutput(FrameSinkOptions):
    type: Literal["jsonl"]
    path: Path = Path("runs/detections.jsonl")
    what: Literal["detections", "events"] = "detections"


class WebhookOutput(Strict):
    type: Literal["webhook"]
    url: str
    timeout_s: float = 5.0
    max_retries: int | None = Field(None, description="None = retry forever (the outbox keeps the event)")


class MqttOutput(Strict):
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "streamweave"
    qos: Literal[0, 1, 2] = 1


class MediaOutput(FrameSinkOptions):
    type: Literal["media"]
    directory: Path = Path("runs/media")
    snapshot: bool = True
    clip_before_s: float = 5.0
    clip_after_s: float = 5.0
    clips: bool | None = Field(
        None, description="keep each stream's recent packets for event clips; null = when an alert rule asks for "
        "clips, true = always (for events of `stages:` plugins that ask for clips in their payload)",
    )


class MotExport(FrameSinkOptions):
    type: Literal["mot"]
    directory: Path = Path("runs/mot")


def _output_config(item: Any) -> Any:
    """A `sinks:` entry as the model its registered type declares."""
    if isinstance(item, BaseModel):
        return item
    kind = item.get("type") if isinstance(item, dict) else None
    if not isinstance(kind, str):
        raise ValueError("a sink needs a `type`, e.g. {type: sqlite, path: runs/detections.db}")
    return plugins.output(kind).config.model_validate(item)


OutputEntry = Annotated[Any, BeforeValidator(_output_config)]
"""One `sinks:` entry: the pydantic model of its registered type."""


def is_event_output(entry: Any) -> bool:
    """True for entries the outbox feeds (webhook, MQTT, an events JSONL, a plugin's event output)."""
    events = plugins.output(entry.type).events
    return events(entry) if callable(events) else events


for _model, _events in ((SqliteStorage, False), (PostgresStorage, False), (JsonlOutput, lambda e: e.what == "events"),
                        (WebhookOutput, True), (MqttOutput, True), (MediaOutput, False), (MotExport, False)):
    _type = _model.model_fields["type"].annotation.__args__[0]
    plugins.register_output(plugins.OutputKind(_type, _model, f"pipeline.sinks.builtin:{_type}", events=_events))
