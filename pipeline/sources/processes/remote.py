"""`RemoteWorker`: this process's handle on one stream decoded in a decode process (the `Worker` protocol)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pipeline.backoff import Backoff
from pipeline.config.models import StreamConfig
from pipeline.sources.worker import WorkerState
from pipeline.types import Frame

log = logging.getLogger(__name__)

SILENT_MIN_S = 2.0
"""A decode process reports its running streams every 0.5 s: a live stream with no report for its `read_timeout_s`,
and at least this long, is stalled (its process hangs, a decoder call that never returns, say)."""


class RemoteWorker:
    """`child`/`index` say where the stream runs now (a live stream moves to a new child when its child
    dies); `pid` is that process. Counters of earlier children are carried, so they keep growing
    across restarts. `stop_stream(worker)` asks the owner to stop it."""

    def __init__(self, config: StreamConfig, decoder: str, packet_ring_s: float,
                 stop_stream: Callable[[RemoteWorker], None]):
        self.config = config
        self.decoder = decoder
        self.packet_ring_s = packet_ring_s
        self.child = -1
        self.index = -1
        self.pid: int | None = None
        self.ended = threading.Event()
        self.stop_requested = False
        self.backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._stop_stream = stop_stream
        self._stats: dict = {"state": WorkerState.NEW.value}
        self._live = config.is_live
        self._reported = time.monotonic()
        self._carried: dict[str, int] = {}
        self._restart_error: str | None = None
        self._last: tuple[int, int, int, int] | None = None  # seq, pts_ns, wall_ns, epoch of the newest frame
        self._period_ns = 0
        self._copy_failures = 0  # frames decoded there and lost copying them here (counted here, not there)
        self._copy_error: str | None = None

    @property
    def state(self) -> WorkerState:
        return WorkerState(self.stats()["state"])

    def start(self) -> None:
        """Nothing to do: the stream started when it was added to its child."""

    def stop(self) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self._stop_stream(self)

    def join(self, timeout: float | None = None) -> bool:
        return self.ended.wait(timeout)

    def stats(self) -> dict:
        stats = {**self._stats, "dropped_copy": self._copy_failures}
        silent = time.monotonic() - self._reported > max(self.config.read_timeout_s, SILENT_MIN_S)
        if self._live and silent and stats["state"] == WorkerState.RUNNING.value:
            stats["state"] = WorkerState.STALLED.value
        return stats

    def update(self, stats: dict) -> None:
        self._reported = time.monotonic()
        self._stats = {**stats, **{key: stats.get(key, 0) + n for key, n in self._carried.items()}}
        if self._stats.get("last_error") is None and self._carried:
            self._stats["last_error"] = self._restart_error  # like a worker's, it stays after the reconnect

    def fail(self, message: str) -> None:
        log.error("%s", message)
        self._stats = {**self._stats, "state": WorkerState.FAILED.value, "last_error": message}

    def copy_failed(self, error: Exception) -> None:
        """A frame of this stream was decoded but could not be copied into this process: it is lost (logged
        when the reason is new, not for every frame)."""
        self._copy_failures += 1
        message = f"{self.config.id}: a decoded frame could not be copied from its decode process: {error}"
        if message != self._copy_error:
            log.warning("%s (frames lost, counted in dropped_copy)", message)
            self._copy_error = message

    def saw(self, frame: Frame) -> None:
        """A frame of this stream arrived (where a restarted child goes on from)."""
        if self._last is not None and frame.pts_ns > self._last[1]:
            self._period_ns = frame.pts_ns - self._last[1]
        self._last = (frame.seq, frame.pts_ns, frame.wall_ns, frame.epoch)
        self.backoff.reset()

    def restarting(self, message: str) -> tuple[int, int, int, int, int] | None:
        """Its child died and a new one will take the stream: carry the counters, count a
        reconnect; returns the `StreamWorker` resume point (None before the first frame)."""
        log.warning("%s", message)
        counters = {key: value for key, value in self._stats.items()
                    if isinstance(value, int) and not isinstance(value, bool)}
        self._carried = {**counters, "reconnects": counters.get("reconnects", 0) + 1}
        self._restart_error = message
        self._stats = {**self._stats, **self._carried, "state": WorkerState.RECONNECTING.value, "last_error": message}
        if self._last is None:
            return None
        seq, pts_ns, wall_ns, epoch = self._last
        return seq + 1, pts_ns, self._period_ns, wall_ns, epoch
