"""Per-frame Python stages from the config: what DeepStream users do with probes and Savant users with pyfuncs.

    stages:
      - python: my_package.speed:SpeedLimit       # or the name a plugin registered it under
        options: {limit_kmh: 50}
        streams: [gate-1]                          # default: every stream

`SpeedLimit(stream_id, **options)` is made once per stream. It is called with each `FrameResult` of its
stream, in frame order, after the tracker and the zone/line analytics (so it sees track ids and the
frame's zone and line events), and returns `Event`s (a list, a generator's, or None), each made with
`result.moment.event(rule, kind, track_id, class_id, payload)` so that its id is unique across runs
(`pipeline.types.make_event_id`); it may add named columns per detection or per track with
`result.detections.add_attribute(name, values)` or `result.tracks.add_attribute(...)` (the JSONL sink writes
them beside the rows they belong to). An optional `close()` runs when the stream
ends or is removed. An exception is isolated: counted as that stage's failure, logged, and the stream
goes on.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import plugins
from pipeline.config.models import StageConfig
from pipeline.errors import ConfigError
from pipeline.masking import mask_url
from pipeline.types import Event, FrameResult, Moment


_EVENT_FIELDS = {**dict.fromkeys(("track_id", "class_id", "ts_ns", "wall_ns"), (int, np.integer)),
                 **dict.fromkeys(("event_id", "run_id", "stream_id", "rule", "kind"), str), "payload": dict}


class PythonStage:
    """Adapts one user object to the `StreamStage` protocol; `name` is the configured `python` value."""

    def __init__(self, config: StageConfig, stream_id: str):
        self.name, self.config = config.python, config
        factory = plugins.stage_factory(config.python)
        options = _own(config.options)
        try:
            self.target: Any = factory(stream_id, **options)
        except Exception as exc:  # noqa: BLE001 - the user's code: an option it refuses, a file or service it lacks
            raise ConfigError(f"stage '{config.python}' for stream '{stream_id}': cannot be made with options "
                              f"{sorted(config.options)} ({type(exc).__name__}: {mask_url(str(exc))}); fix stages -> "
                              "options or what the stage needs when made") from None

    def process(self, result: FrameResult) -> None:
        events = list(self.target(result) or [])  # a generator's would be spent by the checks
        for event in events:
            self._check(event)
        result.events.extend(events)

    def _check(self, event: Any) -> None:
        """TypeError naming this stage for what is not an Event as `Moment.event` makes it: what the pipeline
        does with events after the stages (naming their class, storing them) must not fail on one."""
        if not isinstance(event, Event):
            raise TypeError(f"stage '{self.name}' returned {type(event).__name__}, not an Event")
        for key, kinds in _EVENT_FIELDS.items():
            value = getattr(event, key)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise TypeError(f"stage '{self.name}' returned an event whose {key} is {value!r}; make events with "
                                "result.moment.event(rule, kind, track_id, class_id, payload)")

    def end(self, at: Moment) -> list[Event]:
        self.close()
        return []

    def close(self) -> None:
        """Close the user's object: its optional `close`, as documented."""
        close = getattr(self.target, "close", None)
        if close is not None:
            close()


def _own(value: Any) -> Any:
    """`value` with each dict, list, tuple and set in it copied: a collection in the options is each stream's own (one
    that a stream's plugin appends to is not seen by the others), while any other object given in code (a queue, a
    lock, a connection pool) is passed as it is, shared."""
    if isinstance(value, dict):
        return {key: _own(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return type(value)(_own(item) for item in value)
    return value
