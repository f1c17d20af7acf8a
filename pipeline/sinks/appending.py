"""Appending a batch to a file all or nothing, as the file sinks (JSONL, MOT export) do: a write that fails (a
full disk) takes back the part it wrote and raises `StorageUnavailable`, so their writer keeps the batch and
retries it with backoff (`pipeline.sinks.storage.writer`); the file never holds a batch twice, nor part of one.
Where the part written cannot be taken back (a pipe, an append-only file), an `Appender`'s retry of the batch
writes only what follows that part, so the file still holds the batch once, whole.
`moved_away` tells an appended file that a log rotation moved away (or that was deleted) from the one at its path."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import SinkError
from pipeline.sinks.storage.writer import StorageUnavailable


class PartKept(StorageUnavailable):
    """A write failed and the file could not be cut back (a pipe, an append-only file): `part` stays on it."""

    def __init__(self, message: str, part: bytes):
        super().__init__(message)
        self.part = part


def append_all(handle: BinaryIO, data: bytes, what: str) -> None:
    """Write all of `data` at the end of `handle` (opened unbuffered, so that a failed write leaves what it says),
    or none of it: StorageUnavailable after the part written was cut off again, PartKept when it could not be;
    SinkError for a pipe whose reader is gone (no retry can write there again).
    what: what `data` is and where it goes, for the messages (`3 records to 'det.jsonl'`)."""
    start = handle.seek(0, os.SEEK_END) if handle.seekable() else None
    written = 0
    try:
        while written < len(data):
            written += handle.write(data[written:])
    except BrokenPipeError as exc:
        raise SinkError(f"cannot write {what}: the program reading the pipe has ended") from exc
    except OSError as exc:
        try:
            handle.truncate(start)  # a pipe cannot be (OSError): what it took is gone
        except OSError:
            raise PartKept(f"cannot write {what} ({exc.strerror}), nor take back the part written: the rest follows "
                           "it when written", data[:written]) from exc
        raise StorageUnavailable(f"cannot write {what} ({exc.strerror})") from exc


class Appender:
    """`append_all` to one open file, continuing a batch whose failed write left its start on the file (`PartKept`)
    when the batch is written again: what follows that start, not the whole batch a second time."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self._kept = b""  # the start of the batch last cut short that stays on the file

    def append(self, data: bytes, what: str) -> None:
        if self._kept and not data.startswith(self._kept):  # another batch (the one cut short was given up)
            if not self._kept.endswith(b"\n"):
                append_all(self.handle, b"\n", what)  # its broken line ends there, a line of its own
            self._kept = b""
        try:
            append_all(self.handle, data[len(self._kept):], what)
        except PartKept as exc:
            self._kept += exc.part
            raise
        self._kept = b""

    def close(self) -> None:
        self.handle.close()


def moved_away(path: Path, handle: BinaryIO) -> bool:
    """Whether `path` no longer names the open file `handle`: moved away by a log rotation, or deleted (what is
    appended would go on into a file nobody reads, or that is gone). OSError when `path` cannot be looked at."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return True
    return not os.path.samestat(there, os.fstat(handle.fileno()))
