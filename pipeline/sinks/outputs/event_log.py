"""Event log output: one JSON object per line, appended, synced to disk before `deliver` returns.

Configured as `{type: jsonl, what: events, path: ...}` (detections go to pipeline/sinks/jsonl.py).
Each event appears once: after a crash the outbox delivers again what it had not recorded as delivered
(at least once), and an event whose `event_id` is among the log's last `RECENT_IDS` lines (read back
when the log opens) is not appended again. A log deleted or moved away (rotated) while running is opened
again at its path before the next event: the rotation's new file, or a new one.
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path

from pipeline.config import outputs as cfg
from pipeline.errors import ConfigError, SinkError
from pipeline.sinks.appending import moved_away
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event

RECENT_IDS = 1024
"""Event ids of the last lines remembered to recognise an event delivered again (after a crash the outbox
repeats only the last one or few)."""
_TAIL_BYTES = 512 * 1024  # enough for RECENT_IDS lines of typical events


class EventLogOutput:
    """Appends events to a JSONL file. `fsync=False` is faster but a power cut may lose the tail."""

    max_retries = None  # retried until delivered: the outbox keeps the event

    def __init__(self, config: cfg.JsonlOutput, name: str | None = None, *, fsync: bool = True):
        if config.what != "events":
            raise ConfigError(
                f"EventLogOutput writes events, but {config.path} is configured with what={config.what!r}; "
                "use pipeline.sinks.jsonl for detections"
            )
        self.path = Path(config.path).expanduser()
        self.name = name or config.outbox_name
        self.fsync = fsync
        self._lock = threading.Lock()
        self._cut_short = False  # a failed append left part of a line at the end
        self._file = self._open()
        self._recent: deque[str] = deque(self._ids_at_the_end(), maxlen=RECENT_IDS)
        self._seen = set(self._recent)

    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b", buffering=0)  # unbuffered: a failed write leaves nothing to repeat
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a line cut short by a crash: end it so the next one parses
                    handle.write(b"\n")
            return handle
        except OSError as exc:
            raise SinkError(f"cannot open the event log {self.path}: {exc}; check the folder is writable") from exc

    def _ids_at_the_end(self) -> list[str]:
        """The event ids of the log's last lines (up to RECENT_IDS), oldest first; unreadable lines are skipped."""
        size = self._file.tell()
        try:
            self._file.seek(max(0, size - _TAIL_BYTES))
            lines = self._file.read().splitlines()[1 if size > _TAIL_BYTES else 0:]  # the first may start mid-line
        except OSError as exc:
            raise SinkError(f"cannot read back the event log {self.path}: {exc}; check the file is readable") from exc
        ids = []
        for line in lines[-RECENT_IDS:]:
            try:
                ids.append(json.loads(line)["event_id"])
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def deliver(self, event: Event) -> None:
        line = (event_to_json(event) + "\n").encode()
        with self._lock:
            if self._file.closed:
                raise SinkError(f"event log {self.path} is closed; event {event.event_id} stays in the outbox")
            if event.event_id in self._seen:  # delivered again after a crash: it is in the log already
                return
            self._follow_the_path()
            end = self._file.seek(0, os.SEEK_END)
            if self._cut_short:  # a failed append left part of a line that could not be cut back: end it
                line = b"\n" + line
            try:
                written = 0
                while written < len(line):  # a raw write may take part of the line
                    written += self._file.write(line[written:])
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                self._cut_back(end)
                raise SinkError(f"cannot append event {event.event_id} to {self.path}: {exc}") from exc
            self._cut_short = False
            if len(self._recent) == RECENT_IDS:
                self._seen.discard(self._recent[0])
            self._recent.append(event.event_id)
            self._seen.add(event.event_id)

    def _follow_the_path(self) -> None:
        """Reopen when the path no longer names the open file: deleted, or moved away by a log rotation (the
        events would go on into a file nobody can see, counted delivered). The file there, or a new one, is used."""
        try:
            if not moved_away(self.path, self._file):
                return
        except OSError as exc:
            raise SinkError(f"cannot check the event log {self.path}: {exc}") from exc
        reopened = self._open()  # before the old one is closed: a failed reopen leaves it open for the next try
        self._file.close()
        self._file = reopened

    def _cut_back(self, end: int) -> None:
        """Remove what a failed append left (part of a line, on a full disk): the retry writes the whole line."""
        try:
            self._file.truncate(end)
        except OSError:  # the next append ends it first (reading back the log's last ids skips it)
            self._cut_short = True

    def close(self) -> None:
        with self._lock:
            try:
                self._file.close()
            except OSError as exc:
                raise SinkError(f"cannot close the event log {self.path}: {exc}") from exc
