"""Event <-> JSON: the one wire format every event output and the outbox use (`docs/event.schema.json`).

An event is a JSON object with exactly these keys: `event_id` (`pipeline.types.make_event_id`), `run_id`,
`instance` (the instance that decided it, `runtime.instance`; null in an event an older version stored),
`stream_id`, `rule`, `kind`, `track_id` (-1: about no single track), `class_id` (-1: no class),
`class_name` (null with class -1), `ts_ns` (integer nanoseconds on the stream's clock), `wall_ns` (the host's
capture time of its frame, ns since the Unix epoch), `wall_time` (the same as ISO 8601 UTC, milliseconds:
`2025-03-14T09:15:02.123Z`), `snapshot` and `clip` (where the media sink writes them, or null) and
`payload` (an object, what the kind adds: a crossing's `line` and `direction`, a visit's `zone` and `dwell_s`, ...).
numpy scalars and arrays inside `payload` become plain JSON numbers and lists.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

import numpy as np

from pipeline.errors import SinkError
from pipeline.types import Event

EVENT_FORMAT = 2
"""The version of this format, as `docs/event.schema.json` names it in its `$id`; a change to the keys or their
meaning makes a new version (2 added `instance`)."""
EVENT_KEYS = ("event_id", "run_id", "instance", "stream_id", "rule", "kind", "track_id", "class_id", "class_name",
              "ts_ns", "wall_ns", "wall_time", "snapshot", "clip", "payload")
_OLDER = {"run_id": "", "wall_ns": 0, "class_name": None, "snapshot": None, "clip": None, "instance": None}
"""What an event stored by an older version lacks (one still waiting in an outbox after an upgrade)."""


def wall_time(wall_ns: int) -> str:
    """Host time `wall_ns` (ns since the Unix epoch) as ISO 8601 UTC to the millisecond, `2025-03-14T09:15:02.123Z`
    (the storage views write the same text)."""
    seconds = datetime.fromtimestamp(wall_ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{wall_ns // 1_000_000 % 1000:03d}Z"


def json_default(value: Any) -> Any:
    """json.dumps hook for what stages put in payloads and rows: numpy values, sets, tuples and paths."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def event_to_dict(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "run_id": event.run_id,
        "instance": event.instance,
        "stream_id": event.stream_id,
        "rule": event.rule,
        "kind": event.kind,
        "track_id": int(event.track_id),
        "class_id": int(event.class_id),
        "class_name": event.class_name,
        "ts_ns": int(event.ts_ns),
        "wall_ns": int(event.wall_ns),
        "wall_time": wall_time(int(event.wall_ns)),
        "snapshot": event.snapshot,
        "clip": event.clip,
        "payload": event.payload,
    }


def event_to_json(event: Event) -> str:
    """One line of compact JSON (no newline); raises SinkError when the payload cannot be encoded."""
    try:
        return json.dumps(event_to_dict(event), default=json_default, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SinkError(
            f"event {event.event_id} (stream '{event.stream_id}', rule '{event.rule}') has a payload "
            f"that is not JSON: {exc}; put only numbers, strings, lists and dicts in Event.payload"
        ) from exc


def event_from_json(text: str) -> Event:
    """Inverse of `event_to_json` (`wall_time` is read from `wall_ns`)."""
    data = {**_OLDER, **json.loads(text)}
    fields = [k for k in EVENT_KEYS if k != "wall_time"]
    missing = [k for k in fields if k not in data]
    if missing:
        raise SinkError(f"stored event JSON lacks {missing}: {text[:120]!r}")
    return Event(**{k: data[k] for k in fields})
