"""MOTChallenge export: per stream a `<directory>/<stream_id>.txt` of tracked detections.

Rows are `frame, id, bb_left, bb_top, width, height, conf, -1, -1, -1` with `frame = seq + 1` and
`id = track_id` (source pixels, 2 decimals), the format TrackEval and the MOTChallenge tools read.
Untracked detections (track_id -1) are left out. Each file is rewritten when this sink first sees
the stream and appended to after that (a looping file keeps one file); lines are written from a
writer thread so `on_frame` stays cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

from pipeline.config.outputs import MotExport
from pipeline.errors import SinkError
from pipeline.mot import format_rows
from pipeline.sinks.base import BaseSink
from pipeline.sinks.storage.writer import BatchWriter
from pipeline.types import FrameResult


class _Lines:
    __slots__ = ("stream_id", "lines", "size")

    def __init__(self, stream_id: str, lines: list[str] | None):
        self.stream_id, self.lines = stream_id, lines  # lines None = the stream ended
        self.size = max(1, len(lines or ()))


class MotExportSink(BaseSink):
    """A `Sink` writing one MOTChallenge result file per stream under `config.directory`."""

    def __init__(self, config: MotExport, *, flush_interval_s: float = 0.5, queue_size: int = 4096, put_timeout_s: float = 5.0):
        self.directory = Path(config.directory).expanduser()
        self.name = f"mot:{self.directory}"
        self.rows_written = 0
        self._files: dict[str, TextIO] = {}
        self._started: set[str] = set()
        self._writer = BatchWriter(
            self.name, self._write, batch_size=1024, flush_interval_s=flush_interval_s,
            queue_size=queue_size, put_timeout_s=put_timeout_s,
        )

    def path_for(self, stream_id: str) -> Path:
        return self.directory / f"{stream_id}.txt"

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create MOT export folder '{self.directory}': {exc.strerror}") from exc
        self._writer.start()

    def on_frame(self, result: FrameResult) -> None:
        det = result.detections.to_host()
        tracked = det[det.track_id >= 0]
        if len(tracked):
            self._writer.put(_Lines(result.frame.stream_id, format_rows(int(result.frame.seq) + 1, tracked)))

    def on_stream_end(self, stream_id: str) -> None:
        self._writer.put(_Lines(stream_id, None))

    def close(self) -> None:
        drained = self._writer.close()
        for f in self._files.values():
            f.close()
        self._files.clear()
        if not drained:
            raise SinkError(f"{self.name}: not every row was written; see the log for the cause")

    def stats(self) -> dict:
        return {**self._writer.stats(), "rows_written": self.rows_written}

    def _write(self, items: list[_Lines]) -> None:
        try:
            for item in items:
                if item.lines is None:
                    f = self._files.pop(item.stream_id, None)
                    if f is not None:
                        f.close()
                    continue
                self._file(item.stream_id).write("".join(line + "\n" for line in item.lines))
                self.rows_written += len(item.lines)
            for f in self._files.values():
                f.flush()
        except OSError as exc:
            raise SinkError(f"cannot write MOT rows under '{self.directory}': {exc.strerror}") from exc

    def _file(self, stream_id: str) -> TextIO:
        f = self._files.get(stream_id)
        if f is None:
            mode = "a" if stream_id in self._started else "w"
            f = self._files[stream_id] = self.path_for(stream_id).open(mode, encoding="utf-8")
            self._started.add(stream_id)
        return f
