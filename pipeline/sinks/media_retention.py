"""Keeping the media directory bounded: snapshots, crops and clips older than the media sink's `retention_days`
are deleted, and so are half-written files (`*.part`) a crash or a full disk left behind.

A thread of its own (`media:retention`) sweeps the directory when the sink opens and then every
`SWEEP_EVERY_S`, one file at a time, so a large backlog never holds up the sink's frames.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
PART_STALE_S = 3600.0
"""A `.part` file untouched this long is left over (a write of its own finishes in seconds)."""
MEDIA_SUFFIXES = (".jpg", ".mp4")


class MediaRetention:
    """Deletes files under `directory` (one folder per stream) older than `retention_days` (None: keep them),
    and stale `.part` files."""

    def __init__(self, directory: Path, retention_days: float | None):
        self.directory = directory
        self.max_age_s = retention_days * 86_400 if retention_days is not None else None
        self.deleted = 0
        self.swept = threading.Event()  # set after each sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="media:retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a sink that never opened has nothing running)
            self._thread.join(5.0)

    def sweep(self, now: float) -> int:
        """Delete what is due at wall time `now`; how many files went."""
        gone = 0
        for stream in _entries(self.directory):
            if not stream.is_dir(follow_symlinks=False):
                continue
            for entry in _entries(Path(stream.path)):
                if self._stop.is_set():
                    return gone
                if self._due(entry, now):
                    try:
                        os.unlink(entry.path)
                        gone += 1
                    except FileNotFoundError:
                        pass  # deleted meanwhile
                    except OSError as exc:
                        log.warning("media: cannot delete %s: %s", entry.path, exc)
        self.deleted += gone
        return gone

    def _due(self, entry: os.DirEntry, now: float) -> bool:
        try:
            if not entry.is_file(follow_symlinks=False):
                return False
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            return False
        if entry.name.endswith(".part"):
            return age > PART_STALE_S
        return self.max_age_s is not None and entry.name.endswith(MEDIA_SUFFIXES) and age > self.max_age_s

    def _run(self) -> None:
        while True:
            gone = self.sweep(time.time())
            self.swept.set()
            if gone:
                log.info("media: deleted %d files past retention (or left half-written) under %s", gone,
                         self.directory)
            if self._stop.wait(SWEEP_EVERY_S):
                return


def _entries(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []
