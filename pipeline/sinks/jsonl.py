"""JSON Lines output of detections or tracks: one object per frame.

`what: detections` (what the detector found, `FrameResult.detections`): `{"stream_id", "seq", "frame_index",
"epoch", "pts_ns", "wall_ns", "width", "height", "detections": [{"class_id", "class_name", "score", "xyxy":
[x1, y1, x2, y2], "track_id", ...}]}`, `track_id` the track the detection was matched to (-1: none).
`what: tracks` (the tracker's boxes, `FrameResult.tracks`): the same, with `"tracks": [{..., "coasted"}]`
instead, `coasted` true for a predicted box (score 0) of a track no detection matched on this frame.
Boxes are in source pixels rounded to 0.01, scores to 1e-4; `...`: the attributes `stages:` plugins added
to those rows, by name; `frame_index` and `epoch` say where the frame is in its source (`pipeline.types.Frame`).
A `jsonl` sink with `what: events` is the event log behind the outbox (`pipeline.sinks.outputs.event_log`),
not this class. The file is appended to (a rerun adds to it); lines are written from a writer thread every
`flush_interval_s`, and everything is written by `close()`; a file moved away (a log rotation) or deleted while
running is opened again at its path before the next lines. A write that fails (a full disk) takes back what it
wrote of its batch and keeps the batch, retried with backoff until it is written (records still unwritten at
`close()` are counted lost), as a database that is down (where the part written cannot be taken back, a pipe or an
append-only file, the retry writes what follows it: each record once, whole); a file found ending inside a record
(a crash mid-write) is cut back to its last whole line when opened, with a warning, so every other line is one JSON object.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import BinaryIO

from pipeline.config.outputs import JsonlOutput
from pipeline.errors import SinkError
from pipeline.sinks.appending import Appender, moved_away
from pipeline.sinks.base import BaseSink
from pipeline.sinks.outputs.payload import json_default
from pipeline.sinks.storage.writer import BatchWriter, StorageUnavailable
from pipeline.types import Detections, FrameResult, class_name

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024
"""The longest last line a JSONL output is opened on (a frame's record is a few kB; more is another kind of file)."""


class JsonlSink(BaseSink):
    """A `Sink` writing JSON Lines to `config.path`: `config.what` is "detections" or "tracks" (see the module
    docstring for the records)."""

    def __init__(
        self,
        config: JsonlOutput,
        class_names: list[str],
        *,
        flush_interval_s: float = 0.5,
        queue_size: int = 4096,
        put_timeout_s: float = 5.0,
    ):
        self.path = Path(config.path).expanduser()
        self.what = config.what
        self.class_names = list(class_names)
        self.name = f"jsonl:{self.path}"
        self.records_written = 0
        self._file: Appender | None = None
        self._writer = BatchWriter(
            self.name, self._write, batch_size=256, flush_interval_s=flush_interval_s,
            queue_size=queue_size, put_timeout_s=put_timeout_s,
        )

    def open(self) -> None:
        try:
            self._file = Appender(self._open_file())
        except OSError as exc:
            raise SinkError(f"cannot open JSONL output '{self.path}': {exc.strerror}; check the path is writable") from exc
        self._writer.start()

    def _open_file(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+b", buffering=0)  # unbuffered: a failed write leaves what it says
        try:
            self._cut_half_record(handle)
        except (SinkError, OSError):
            handle.close()
            raise
        return handle

    def _follow_the_path(self) -> None:
        """Open the file at the path again when it no longer names the open one: moved away by a log rotation, or
        deleted (the records would go on into a file nobody reads, or that is gone)."""
        try:
            if not moved_away(self.path, self._file.handle):
                return
        except OSError as exc:
            raise StorageUnavailable(f"cannot check '{self.path}' ({exc.strerror})") from exc
        try:
            reopened = self._open_file()
        except OSError as exc:
            raise StorageUnavailable(f"cannot open '{self.path}' again ({exc.strerror})") from exc
        self._file.close()
        self._file = Appender(reopened)

    def needs_picture(self, result: FrameResult) -> bool:
        return False

    def on_frame(self, result: FrameResult) -> None:
        self._writer.put(self._frame_record(result))

    def on_stream_end(self, stream_id: str) -> None:
        """Nothing to do: lines are flushed on the writer's interval and at close."""

    def close(self) -> None:
        drained = self._writer.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        if not drained:
            raise SinkError(f"{self.name}: not every record was written; see the log for the cause")

    def stats(self) -> dict:
        return {**self._writer.stats(), "records_written": self.records_written}

    def _frame_record(self, result: FrameResult) -> dict:
        frame = result.frame
        if self.what == "tracks":
            rows = self._rows(result.tracks.to_host())
            for row, coasted in zip(rows, result.coasted().tolist()):
                row["coasted"] = coasted
        else:
            rows = self._rows(result.detections.to_host())
        return {
            "stream_id": frame.stream_id, "seq": int(frame.seq), "frame_index": int(frame.index),
            "epoch": int(frame.epoch), "pts_ns": int(frame.pts_ns), "wall_ns": int(frame.wall_ns),
            "width": int(frame.width), "height": int(frame.height), self.what: rows,
        }

    def _rows(self, det: Detections) -> list[dict]:
        ids = det.class_id.tolist()
        boxes = det.xyxy.round(2).tolist()
        attributes = {name: [_plain(v) for v in column.tolist()] for name, column in det.attributes.items()}
        return [
            {"class_id": c, "class_name": class_name(self.class_names, c), "score": round(s, 4), "xyxy": b, "track_id": t,
             **{name: values[i] for name, values in attributes.items()}}
            for i, (c, s, b, t) in enumerate(zip(ids, det.score.tolist(), boxes, det.track_id.tolist()))
        ]

    def _cut_half_record(self, handle: BinaryIO) -> None:
        """Make the file end with a whole line before records are appended: a last line that is a whole record
        (written by hand or by another tool, without its newline) gets its newline; one cut short by a crash
        mid-write (not JSON) is cut off. A file whose last line is neither, or longer than `MAX_LINE_BYTES`, is
        refused: it is not a JSON Lines file, and nothing of it is changed."""
        if not handle.seekable():  # a pipe or a terminal: nothing to cut
            return
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - MAX_LINE_BYTES)
        handle.seek(start)
        tail = handle.read(size - start)
        if not tail or tail.endswith(b"\n"):
            return
        newline = tail.rfind(b"\n")
        if newline < 0 and start > 0:
            raise SinkError(f"JSONL output '{self.path}' ends with a line of over {MAX_LINE_BYTES} bytes: it is not a "
                            "JSON Lines file; choose another path")
        last = tail[newline + 1:]
        try:
            json.loads(last)
        except ValueError:
            if not last.lstrip().startswith(b"{"):
                raise SinkError(f"JSONL output '{self.path}' does not end with a JSON record: it is not a JSON Lines "
                                "file; choose another path") from None
            handle.truncate(size - len(last))
            log.warning("jsonl: '%s' ended inside a record (an earlier run stopped mid-write); cut its last %d bytes "
                        "so that new records start on a line of their own", self.path, len(last))
            return
        handle.write(b"\n")  # a whole record without its newline

    def _write(self, records: list[dict]) -> None:
        try:
            data = "".join(json.dumps(r, default=json_default) + "\n" for r in records).encode()
        except (TypeError, ValueError) as exc:
            raise SinkError(f"cannot write {len(records)} records to '{self.path}': {exc}") from exc
        if self._file.handle.seekable():  # a pipe or a terminal is never rotated
            self._follow_the_path()
        self._file.append(data, f"{len(records)} records to '{self.path}'")
        self.records_written += len(records)


def _plain(value):
    """An attribute value JSON can hold: bytes as text, anything else unknown by its str()."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return str(value)
