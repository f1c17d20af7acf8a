"""Event log output: one JSON object per line, appended, synced to disk before `deliver` returns.

Configured as `{type: jsonl, what: events, path: ...}` (detections go to pipeline/sinks/jsonl.py).
After a crash the last event may appear twice (at-least-once); readers de-duplicate by `event_id`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from pipeline.config import outputs as cfg
from pipeline.errors import ConfigError, SinkError
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event


class EventLogOutput:
    """Appends events to a JSONL file. `fsync=False` is faster but a power cut may lose the tail."""

    max_retries = None  # retried until delivered: the outbox keeps the event

    def __init__(self, config: cfg.JsonlOutput, name: str | None = None, *, fsync: bool = True):
        if config.what != "events":
            raise ConfigError(
                f"EventLogOutput writes events, but {config.path} is configured with what={config.what!r}; "
                "use pipeline.sinks.jsonl for detections"
            )
        self.path = Path(config.path)
        self.name = name or f"event_log:{self.path}"
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file = self._open()

    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b")
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a line cut short by a crash: end it so the next one parses
                    handle.write(b"\n")
            return handle
        except OSError as exc:
            raise SinkError(f"cannot open the event log {self.path}: {exc}; check the folder is writable") from exc

    def deliver(self, event: Event) -> None:
        line = (event_to_json(event) + "\n").encode()
        with self._lock:
            if self._file.closed:
                raise SinkError(f"event log {self.path} is closed; event {event.event_id} stays in the outbox")
            try:
                self._file.write(line)
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                raise SinkError(f"cannot append event {event.event_id} to {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._file.close()
