"""MOTChallenge export: per stream and reading of its source, a text file of the tracker's boxes.

Rows are `frame, id, bb_left, bb_top, width, height, conf, -1, -1, -1` with `frame = frame_index + 1` (the
frame's position in its source, so a stream capped by `fps` keeps the source's frame numbers) and
`id = track_id` (source pixels, 2 decimals), the format TrackEval and the MOTChallenge tools read. Only
tracks matched to a detection on the frame are written: the predicted boxes of coasting tracks (score 0)
only with `include_coasted`, as MOT tools count a box where no object is as a false positive.

A source's first reading goes to `<directory>/<stream_id>.txt`; each later one (a looped file's next pass,
a live stream after a reconnect: its `epoch`, where frame numbers start again) to
`<directory>/epoch-<N>/<stream_id>.txt`, so every file is one sequence and every folder one TrackEval
tracker folder. A file is written anew when the stream starts (a run, or a stream restarted while running)
and appended to after that (by a sink added while the stream runs, a changed config, too); lines are written
from a writer thread so `on_frame` stays cheap. A write that fails (a full disk) takes back what it wrote of its
frame's rows and keeps the batch, retried with backoff from that frame on until it is written, stream starts and
ends included, as the JSONL sink does (`pipeline.sinks.appending`; where the part written cannot be taken back,
the retry writes what follows it: each row once, whole).
"""
from __future__ import annotations

from pathlib import Path
from pipeline.config.outputs import MotExport
from pipeline.errors import SinkError
from pipeline.mot import format_rows
from pipeline.sinks.appending import Appender
from pipeline.sinks.base import BaseSink
from pipeline.sinks.storage.writer import Batch, BatchWriter, StorageUnavailable
from pipeline.types import FrameResult


class _Lines:
    """What the writer thread gets: one frame's `lines` for `path`, or a stream's `start` (`joined`: this sink was
    added while it ran) or end (lines None)."""

    __slots__ = ("stream_id", "path", "lines", "start", "joined", "size")

    def __init__(self, stream_id: str, path: Path | None = None, lines: list[str] | None = None, start: bool = False,
                 joined: bool = False):
        self.stream_id, self.path, self.lines, self.start, self.joined = stream_id, path, lines, start, joined
        self.size = max(1, len(lines or ()))


class MotExportSink(BaseSink):
    """A `Sink` writing MOTChallenge result files under `config.directory` (see the module docstring)."""

    def __init__(self, config: MotExport, *, flush_interval_s: float = 0.5, queue_size: int = 4096, put_timeout_s: float = 5.0):
        self.directory = Path(config.directory).expanduser()
        self.include_coasted = config.include_coasted
        self.name = f"mot:{self.directory}"
        self.rows_written = 0
        self._files: dict[Path, Appender] = {}
        self._written: tuple[str, int] = ("", 0)  # (batch id, its items written): a retry of it goes on from there
        self._started: dict[str, set[Path]] = {}  # per stream, the files written since it (re)started
        self._joined: set[str] = set()  # streams running when this sink was added: their next file is appended to
        self._writer = BatchWriter(
            self.name, self._write, batch_size=1024, flush_interval_s=flush_interval_s,
            queue_size=queue_size, put_timeout_s=put_timeout_s,
        )

    def path_for(self, stream_id: str, epoch: int = 0) -> Path:
        """The file of `stream_id`'s reading `epoch` of its source."""
        folder = self.directory if epoch == 0 else self.directory / f"epoch-{epoch}"
        return folder / f"{stream_id}.txt"

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create MOT export folder '{self.directory}': {exc.strerror}") from exc
        self._writer.start()

    def on_stream_start(self, stream_id: str, url: str) -> None:
        self._writer.put(_Lines(stream_id, start=True))

    def on_stream_joined(self, stream_id: str, url: str) -> None:
        """Added while `stream_id` runs (a changed config): its reading in progress is appended to, not begun anew."""
        self._writer.put(_Lines(stream_id, start=True, joined=True))

    def needs_picture(self, result: FrameResult) -> bool:
        return False

    def on_frame(self, result: FrameResult) -> None:
        tracks = result.tracks.to_host()
        if not self.include_coasted:
            tracks = tracks[~result.coasted()]
        if len(tracks):
            frame = result.frame
            path = self.path_for(frame.stream_id, frame.epoch)
            self._writer.put(_Lines(frame.stream_id, path, format_rows(int(frame.index) + 1, tracks)))

    def on_stream_end(self, stream_id: str) -> None:
        self._writer.put(_Lines(stream_id))

    def close(self) -> None:
        drained = self._writer.close()
        for f in self._files.values():
            f.close()
        self._files.clear()
        if not drained:
            raise SinkError(f"{self.name}: not every row was written; see the log for the cause")

    def stats(self) -> dict:
        return {**self._writer.stats(), "rows_written": self.rows_written}

    def _write(self, items: Batch) -> None:
        """Each item in turn; one that fails (a full disk) leaves nothing of itself written and StorageUnavailable
        raised, and the writer's retry of the batch goes on from it."""
        batch_id, done = self._written
        for i in range(done if batch_id == items.id else 0, len(items)):
            try:
                self._write_item(items[i])
            except OSError as exc:  # a file or folder that cannot be made: nothing of the item is written either
                raise StorageUnavailable(f"cannot write MOT rows under '{self.directory}' ({exc.strerror})") from exc
            self._written = (items.id, i + 1)

    def _write_item(self, item: _Lines) -> None:
        if item.lines is not None:
            data = "".join(line + "\n" for line in item.lines).encode()
            self._file(item.stream_id, item.path).append(data, f"{len(item.lines)} MOT rows to '{item.path}'")
            self.rows_written += len(item.lines)
            return
        for path in self._started.get(item.stream_id, ()):
            f = self._files.pop(path, None)
            if f is not None:
                f.close()
        if item.start:
            self._started[item.stream_id] = set()
        else:  # ended: a camera removed for good leaves nothing here
            self._started.pop(item.stream_id, None)
        if item.joined:
            self._joined.add(item.stream_id)
        else:  # an end, or a start of its own: its next file is a new reading
            self._joined.discard(item.stream_id)
            if item.start:  # begun anew now: a reading that tracks nothing leaves no rows of an earlier one
                self._file(item.stream_id, self.path_for(item.stream_id))

    def _file(self, stream_id: str, path: Path) -> Appender:
        f = self._files.get(path)
        if f is None:
            started = self._started.setdefault(stream_id, set())
            mode = "ab" if path in started or stream_id in self._joined else "wb"
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open(mode, buffering=0)  # unbuffered: a failed write leaves what it says
            f = self._files[path] = Appender(handle)
            self._joined.discard(stream_id)  # the reading in progress; a later one begins its own file
            started.add(path)
        return f
