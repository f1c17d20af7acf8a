"""Event <-> JSON: the one wire format every event output and the outbox use.

An event is a JSON object with exactly these keys: `event_id` (`pipeline.types.make_event_id`), `run_id`,
`stream_id`, `rule`, `kind`, `track_id`, `class_id`, `ts_ns` (integer nanoseconds on the stream's clock),
`wall_ns` (the host's capture time of its frame, ns since the Unix epoch) and `payload` (an object).
numpy scalars and arrays inside `payload` become plain JSON numbers and lists.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipeline.errors import SinkError
from pipeline.types import Event

EVENT_KEYS = ("event_id", "run_id", "stream_id", "rule", "kind", "track_id", "class_id", "ts_ns", "wall_ns", "payload")
_BEFORE_RUNS = {"run_id": "", "wall_ns": 0}
"""What an event stored by a version without runs lacks (one still waiting in an outbox after an upgrade)."""


def _plain(value: Any) -> Any:
    """json.dumps hook for numpy values and paths."""
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
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def event_to_dict(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "run_id": event.run_id,
        "stream_id": event.stream_id,
        "rule": event.rule,
        "kind": event.kind,
        "track_id": int(event.track_id),
        "class_id": int(event.class_id),
        "ts_ns": int(event.ts_ns),
        "wall_ns": int(event.wall_ns),
        "payload": event.payload,
    }


def event_to_json(event: Event) -> str:
    """One line of compact JSON (no newline); raises SinkError when the payload cannot be encoded."""
    try:
        return json.dumps(event_to_dict(event), default=_plain, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SinkError(
            f"event {event.event_id} (stream '{event.stream_id}', rule '{event.rule}') has a payload "
            f"that is not JSON: {exc}; put only numbers, strings, lists and dicts in Event.payload"
        ) from exc


def event_from_json(text: str) -> Event:
    """Inverse of `event_to_json`."""
    data = {**_BEFORE_RUNS, **json.loads(text)}
    missing = [k for k in EVENT_KEYS if k not in data]
    if missing:
        raise SinkError(f"stored event JSON lacks {missing}: {text[:120]!r}")
    return Event(**{k: data[k] for k in EVENT_KEYS})
