"""The built-in `sinks:` types, registered as outputs (`pipeline.plugins.register_output`).

Frame sinks (storage, detections JSONL, media, MOT export) get every frame's result through a bounded
queue of their own; `overflow` says what happens to a live camera's frames when the sink falls behind
(files always wait: they lose nothing). Event outputs (webhook, MQTT, the events JSONL) are fed by the
durable outbox instead. A plugin adds a type the same way, with its own model and factory.
"""
from __future__ import annotations

import hashlib
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator

from pipeline import plugins
from pipeline.config.fields import HOUR_S, FilePath, Name, Strict
from pipeline.masking import mask_url

Retention = Annotated[float, Field(gt=0, le=36_500)]

FrameRows = Literal["detections", "tracks", "events"]
"""What a JSONL or storage sink writes per frame (`pipeline.types.FrameResult`): `detections`, what the detector
found, its boxes and scores, each with the id of the track it was matched to (-1: none); `tracks`, the
tracker's boxes of the tracks it reports, the predicted boxes of coasting tracks marked `coasted`; `events`,
nothing per frame."""
_ROWS = "detections: the detector's boxes and scores (with the matched track's id) | tracks: the tracker's boxes"


class FrameSinkOptions(Strict):
    """What every frame sink shares: its queue."""

    queue_size: int = Field(256, ge=1, le=100_000, description="frame results waiting for this sink")
    overflow: Literal["drop_oldest", "block"] = Field(
        "drop_oldest",
        description="when the queue is full: drop_oldest drops a live camera's oldest waiting frame (counted per "
        "stream), so a slow sink never holds back detection; block makes live frames wait too. File streams "
        "always wait. Frames that carry events go last, and then only their picture and detections: their "
        "events still reach the sink (clips still cut, snapshots counted as missed)",
    )


class SqliteStorage(FrameSinkOptions):
    type: Literal["sqlite"]
    path: FilePath = Path("runs/detections.db")
    what: FrameRows = Field("detections", description=f"{_ROWS} | events: no rows per frame; runs and events are "
                            "stored in every case")
    batch_size: int = Field(500, ge=1, le=100_000, description="rows per transaction; larger is faster, loses more on a crash")
    flush_interval_s: float = Field(0.5, gt=0, le=HOUR_S)
    retention_days: Retention | None = None

    @property
    def outbox_name(self) -> str:
        """The name its events' cursor is kept under in the outbox."""
        return f"sqlite:{Path(self.path).expanduser()}"


class PostgresStorage(FrameSinkOptions):
    type: Literal["postgres"]
    dsn: str = Field(min_length=1, description="postgresql://user@host/db; the password belongs in PGPASSWORD, not here")
    what: FrameRows = Field("detections", description=f"{_ROWS} | events: no rows per frame; runs and events are "
                            "stored in every case")
    batch_size: int = Field(500, ge=1, le=100_000)
    flush_interval_s: float = Field(0.5, gt=0, le=HOUR_S)
    retention_days: Retention | None = None

    @property
    def outbox_name(self) -> str:
        """The name its events' cursor is kept under in the outbox (no password the DSN carries)."""
        return f"postgres:{mask_url(self.dsn)}"

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, dsn: str) -> str:
        scheme = urllib.parse.urlsplit(dsn).scheme if "://" in dsn else None
        if scheme is not None and scheme not in ("postgresql", "postgres"):
            raise ValueError(f"'{scheme}://' is no PostgreSQL address; write postgresql://user@host/db (or libpq's "
                             "key=value form)")
        return dsn


class JsonlOutput(FrameSinkOptions):
    type: Literal["jsonl"]
    path: FilePath = Path("runs/detections.jsonl")
    what: FrameRows = Field("detections", description=f"{_ROWS}, one line per frame | events: one line per event "
                            "(the event log, fed by the outbox)")

    @property
    def outbox_name(self) -> str | None:
        """With `what: events`, the name the event log's cursor is kept under in the outbox; None otherwise."""
        return f"event_log:{self.path}" if self.what == "events" else None


_OUTPUT_NAME = ("the output's name in the outbox, which keeps its place there (default: from its {what}): keep "
                "the name when the {what} changes, and the events not yet delivered go to the new one")


class WebhookOutput(Strict):
    type: Literal["webhook"]
    url: str = Field(max_length=4096)
    name: Name | None = Field(None, description=_OUTPUT_NAME.format(what="URL"))
    timeout_s: float = Field(5.0, gt=0, le=300, description="wait this long for an answer, then retry later")
    max_retries: int | None = Field(None, ge=0, le=1_000_000, description="None = retry forever (the outbox keeps the event)")

    @property
    def outbox_name(self) -> str:
        """The name its cursor is kept under in the outbox: `name`, or host, port and a digest of the whole URL (no
        secret the URL carries)."""
        parts = urllib.parse.urlsplit(self.url)
        digest = hashlib.sha1(self.url.encode()).hexdigest()[:8]
        return self.name or f"webhook:{parts.hostname}{':' + str(parts.port) if parts.port else ''}#{digest}"

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http:// or https:// with a host, e.g. http://127.0.0.1:8080/events")
        try:
            port = parts.port
        except ValueError:  # not a number, or above 65535
            port = 0
        if port == 0:
            raise ValueError("its port must be a number from 1 to 65535, e.g. http://127.0.0.1:8080/events")
        return url


class MqttOutput(Strict):
    type: Literal["mqtt"]
    host: str = Field("127.0.0.1", min_length=1, max_length=255, pattern=r"^[^\s/]+$", description="the broker")
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("streamweave", min_length=1, max_length=256, pattern=r"^[^#+$\x00/][^#+\x00]*$",
                              description="no MQTT wildcards (+, #); not starting with / or $; `{instance}` is "
                              "replaced by the instance that decided the event (`streamweave/{instance}`)")
    qos: Literal[0, 1, 2] = 1
    name: Name | None = Field(None, description=_OUTPUT_NAME.format(what="broker and prefix"))

    @property
    def outbox_name(self) -> str:
        """The name its cursor is kept under in the outbox: `name`, or from the broker and prefix."""
        return self.name or f"mqtt:{self.host}:{self.port}/{self.topic_prefix}"

    @field_validator("topic_prefix")
    @classmethod
    def _placeholders(cls, prefix: str) -> str:
        unknown = sorted(set(re.findall(r"\{[^}]*\}", prefix)) - {"{instance}"})
        if unknown:
            raise ValueError(f"unknown placeholder {', '.join(unknown)}; only {{instance}} is filled in")
        return prefix


class MediaOutput(FrameSinkOptions):
    type: Literal["media"]
    directory: FilePath = Path("runs/media")
    snapshot: bool = True
    clip_before_s: float = Field(5.0, ge=0, le=300, description="seconds of video kept before an event (held in memory per stream)")
    clip_after_s: float = Field(5.0, ge=0, le=300, description="seconds recorded after it")
    clips: bool | None = Field(
        None, description="keep each stream's recent packets for event clips; null = when an alert rule asks for "
        "clips, true = always (for events of `stages:` plugins that ask for clips in their payload)",
    )
    retention_days: Retention | None = Field(
        None, description="delete snapshots, crops and clips older than this (checked hourly); null = keep them")


class MotExport(FrameSinkOptions):
    type: Literal["mot"]
    directory: FilePath = Path("runs/mot")
    include_coasted: bool = Field(
        False, description="also write the predicted boxes of coasting tracks (score 0); MOT tools count them as "
        "false positives where the object is not there",
    )


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


def uses_outbox(entry: Any) -> bool:
    """True for entries whose events come through the outbox: event outputs, and storage (its events table)."""
    return is_event_output(entry) or getattr(entry, "outbox_name", None) is not None


_FILE, _FOLDER = ("path", "file"), ("directory", "folder")
for _model, _events, _writes in (
        (SqliteStorage, False, _FILE), (PostgresStorage, False, None), (JsonlOutput, lambda e: e.what == "events", _FILE),
        (WebhookOutput, True, None), (MqttOutput, True, None), (MediaOutput, False, _FOLDER), (MotExport, False, _FOLDER)):
    _type = _model.model_fields["type"].annotation.__args__[0]
    plugins.register_output(plugins.OutputKind(_type, _model, f"pipeline.sinks.builtin:{_type}", events=_events,
                                               writes=_writes))
