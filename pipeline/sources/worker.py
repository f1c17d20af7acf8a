"""`StreamWorker`: one thread per stream that reads, paces and hands frames to the aligned buffer."""
from __future__ import annotations

import enum
import logging
import threading
import time
import traceback
from collections import Counter
from contextlib import closing
from typing import Protocol

from pipeline.backoff import Backoff
from pipeline.config.models import StreamConfig
from pipeline.config.resolve import stream_decoder
from pipeline.errors import ConfigError, SourceError, SourceRefused
from pipeline.fps_cap import FpsCap
from pipeline.machine import probe
from pipeline.sources import open_reader
from pipeline.sources.demux import is_hls
from pipeline.sources.packets import PacketRings
from pipeline.sources.pyav import DecoderShelf
from pipeline.masking import mask_url
from pipeline.sources.reader import DecodedFrame, FrameSink, Pictures, Reader
from pipeline.sources.timeline import Timeline
from pipeline.types import Frame

log = logging.getLogger(__name__)

REFUSED_MIN_S, REFUSED_MAX_S = 5.0, 60.0
"""Retry delays after the server refused the stream (401, 403, 404; `SourceRefused`): at least `reconnect_min_s`
and REFUSED_MIN_S, growing with the time refused up to REFUSED_MAX_S (or `reconnect_max_s`, if larger): about
six tries in the first minute, then one or two a minute. Quick retries cannot fix a password or a path, and
cameras lock accounts out after repeated failed logins. A corrected url applies when the stream is changed."""

FILE_PUT_TIMEOUT_S = 0.1
"""How long one `put` of a file frame waits for room before the worker checks its stop event again."""


class WorkerState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    RUNNING = "running"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    S.NEW: frozenset({S.CONNECTING, S.STOPPED}),
    S.CONNECTING: frozenset({S.RUNNING, S.RECONNECTING, S.FINISHED, S.FAILED, S.STOPPED}),
    S.RUNNING: frozenset({S.STALLED, S.CONNECTING, S.RECONNECTING, S.FINISHED, S.FAILED, S.STOPPED}),
    S.STALLED: frozenset({S.RUNNING, S.CONNECTING, S.RECONNECTING, S.FINISHED, S.FAILED, S.STOPPED}),
    S.RECONNECTING: frozenset({S.CONNECTING, S.FAILED, S.STOPPED}),
    S.FINISHED: frozenset(),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
}
"""Legal state changes; FINISHED, STOPPED and FAILED are final. STALLED is how a RUNNING live stream
looks while no frame comes (`StreamWorker.state`): its thread may be blocked in a read, so the state
is seen, not set; it leaves as RUNNING would, or back to RUNNING with the next frame."""


class Worker(Protocol):
    """One stream's reader as the rest of the pipeline sees it: a `StreamWorker` in this process, or a
    `processes.RemoteWorker` for a stream decoded in a decode process."""

    config: StreamConfig

    @property
    def state(self) -> WorkerState: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...  # ask the stream to stop; returns at once

    def join(self, timeout: float | None = None) -> bool: ...  # True once the stream has ended (or never started)

    def stats(self) -> dict: ...


class StreamWorker:
    """Reads one stream on thread `decode:<id>` and `put`s `Frame`s into `sink` until done or stopped.

    Files finish at their end (or loop, with pts continuing across loops); a file that cannot be opened or decoded
    fails its stream. Live streams reconnect forever, waiting longer the longer they have been down
    (`pipeline.backoff`, at most `reconnect_max_s`), whether they errored or "ended" (a killed RTSP server looks
    like a normal end), and show as STALLED while no frame comes; an HLS camera's frames a reconnect reads again
    are dropped (`replayed`). `sink.end_stream(id)` is always called when the thread exits.
    packets: the `PacketRings` clips are cut from: they get every demuxed packet (`tap`) and where each pass lies
    on the stream's joined timeline (`Timeline`).
    decoder: "nvdec", "cpu" or "source", as the plan chose (`pipeline.config.resolve`); None resolves it for this
    machine when the thread starts (a stream that asks for NVDEC where it cannot run fails).
    pictures: where NVDEC pictures go (decode processes pass their shared slots); the worker gives back the ones it
    drops (an fps cap, a replay) and, at the end of every pass, any it never got to send.
    resume: `(next seq, last pts_ns, frame period ns, last wall_ns, last epoch)` of the same stream's earlier
    worker (in a decode process that died): seq, pts and epoch go on from there, like after a reconnect.
    """

    def __init__(self, config: StreamConfig, sink: FrameSink,
                 packets: PacketRings | None = None,
                 pictures: Pictures | None = None,
                 resume: tuple[int, int, int, int, int] | None = None, decoder: str | None = None):
        self.config = config
        self.decoder = decoder
        self.sink = sink
        self._pictures = pictures
        self._live = config.is_live
        self._realtime = config.realtime
        self._pace_origin: tuple[int, int, int] | None = None  # (monotonic, wall, pts) ns of the first paced frame
        self._shelf = DecoderShelf() if config.loop and not self._live else None
        self.label = f"stream '{config.id}' ({mask_url(config.url)})"
        self._packet_tap = packets.tap if packets is not None else None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = WorkerState.NEW
        self._thread = threading.Thread(target=self._run, name=f"decode:{config.id}", daemon=True)
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._refused_backoff = Backoff(max(config.reconnect_min_s, REFUSED_MIN_S),
                                        max(config.reconnect_max_s, REFUSED_MAX_S))
        self._timeline = Timeline(config.id, packets, replays=self._live and is_hls(config.url))  # a VOD loops
        self._cap = FpsCap(config.fps)
        self._seq = 0
        self._last_wall_ns = 0
        self._counters = Counter(frames=0, decoded=0, dropped_fps_cap=0, dropped_sink=0, sink_waits=0, skipped_late=0,
                                 paced_late=0, pts_repaired=0, tap_errors=0, corrupt_packets=0, reconnects=0, loops=0,
                                 replayed=0)
        self._reader: Reader | None = None  # the pass's, whose counters `stats` adds while it runs
        self._reader_lock = threading.Lock()  # its counters move into `_counters` once, never seen twice
        self._last_error: str | None = None
        self._first_frame_s: float | None = None
        self._fps_window = (time.monotonic(), 0)
        self._decode_fps = 0.0
        self._last_frame_at = time.monotonic()
        self._segment_wait_s = 0.0 if is_hls(config.url) else None  # HLS: longest wait between frames in the pass
        if resume is not None:
            self._seq, self._timeline.last_ns, self._timeline.period_ns, self._last_wall_ns, self._timeline.epoch = resume
            self._timeline.start_pass(max(time.time_ns() - self._last_wall_ns, 0))

    # lifecycle -------------------------------------------------------------------------------
    @property
    def state(self) -> WorkerState:
        """The thread's state, but STALLED for a live stream RUNNING with no frame for `read_timeout_s`
        (HLS: plus the longest wait for a segment in this pass): the source hangs, or sends nothing
        decodable, and has not been given up on yet."""
        state = self._state
        if state is WorkerState.RUNNING and self._live:
            allowed_s = self.config.read_timeout_s + (self._segment_wait_s or 0.0)
            if time.monotonic() - self._last_frame_at > allowed_s:
                return WorkerState.STALLED
        return state

    def start(self) -> None:
        """Start the thread; a worker starts once. One stopped before it started only reports its end."""
        with self._lock:  # held until the thread exists: a `join` meanwhile must not take it for never started
            stopped = self._state is WorkerState.STOPPED
            if not stopped:
                if WorkerState.CONNECTING not in TRANSITIONS[self._state]:
                    raise RuntimeError(f"{self.label}: started twice")
                self._state = WorkerState.CONNECTING
                self._thread.start()
        if stopped:
            self._end_stream()

    def stop(self) -> None:
        """Ask the thread to stop; returns at once (use `join` to wait). Frames in flight are dropped."""
        self._stop.set()
        with self._lock:
            if self._state is WorkerState.NEW:
                self._state = WorkerState.STOPPED

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the thread to exit; True when it has (or never started).

        A stop waits for the current network read, bounded by `read_timeout_s` (HLS: the next segment's wait and
        download, unbounded), or while opening for the open, bounded by `open_timeout_s`."""
        with self._lock:
            never_started = self._thread.ident is None
        if never_started:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict:
        """Counters for metrics: frames put, frames decoded, drops, reconnects, decode fps, last error."""
        with self._reader_lock:
            counters = Counter(self._counters)
            if self._reader is not None:  # a live camera's pass lasts until it disconnects: count as it goes
                counters.update(self._reader.counters())  # adds
        return dict(counters, state=self.state.value, decode_fps=round(self._current_fps(), 1),
                    first_frame_s=self._first_frame_s, last_error=self._last_error)

    def _current_fps(self) -> float:
        """Frames decoded per second over the last full second (the partial one before the first); 0 while no
        frames come (connecting, reconnecting, stalled, ended), not the rate from before."""
        if self.state is not WorkerState.RUNNING:
            return 0.0
        if self._decode_fps:
            return self._decode_fps
        t0, n = self._fps_window
        elapsed = time.monotonic() - t0
        return n / elapsed if n and elapsed > 0 else 0.0

    def _set_state(self, new: WorkerState) -> None:
        with self._lock:
            if new not in TRANSITIONS[self._state]:
                raise RuntimeError(f"{self.label}: illegal state change {self._state.value} -> {new.value}")
            self._state = new

    # the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except (SourceError, ConfigError) as exc:
            self._fail(f"{exc}; the stream has stopped (fix the source and restart)")
        except Exception as exc:  # noqa: BLE001 - any bug ends this stream only, never the others
            log.error("%s: decode worker crashed:\n%s", self.label, mask_url(traceback.format_exc()))
            self._fail(f"{self.label}: worker crashed ({type(exc).__name__}: {exc}); the stream has stopped")
        finally:
            try:
                if self._shelf is not None:
                    self._shelf.close()
                if self._state not in (WorkerState.FINISHED, WorkerState.FAILED):
                    self._set_state(WorkerState.STOPPED)
            finally:
                self._end_stream()

    def _end_stream(self) -> None:
        try:
            self.sink.end_stream(self.config.id)
        except Exception:  # noqa: BLE001 - the thread is ending anyway; keep the reason in the log
            log.exception("%s: sink.end_stream failed", self.label)

    def _fail(self, message: str) -> None:
        self._last_error = mask_url(message)
        log.error("%s", self._last_error)
        self._set_state(WorkerState.FAILED)

    def _loop(self) -> None:
        if self.decoder is None:
            self.decoder = stream_decoder(self.config, probe())
        live = self._live
        while not self._stop.is_set():
            if self._state not in (WorkerState.CONNECTING, WorkerState.RUNNING):  # a file's next pass runs on
                self._set_state(WorkerState.CONNECTING)
            started = time.monotonic()
            try:
                produced = self._one_pass(started)
            except SourceError as exc:
                if not live:
                    raise
                if self._stop.is_set():
                    return
                self._reconnect_after(str(exc), self._refused_backoff if isinstance(exc, SourceRefused) else None)
                continue
            if self._stop.is_set():
                return
            if live:
                self._reconnect_after(f"{self.label}: stream ended")
            elif produced == 0:
                raise SourceError(f"{self.label}: no frames could be decoded")
            elif self.config.loop:
                self._counters["loops"] += 1
                self._timeline.start_pass()
            else:
                self._set_state(WorkerState.FINISHED)
                return

    def _one_pass(self, started: float) -> int:
        """Reads the stream once; returns the number of frames decoded in this pass."""
        allocate = self._pictures.allocate if self._pictures is not None else None
        reader = open_reader(self.config, self.decoder, packet_tap=self._packet_tap, allocate=allocate,
                             shelf=self._shelf)
        with self._reader_lock:
            self._reader = reader
        produced = 0
        try:
            with closing(reader.frames()) as frames:
                for decoded in frames:
                    if self._timeline.replayed(decoded.pts_ns):  # an HLS playlist read again: not news
                        self._drop(decoded, "replayed")
                        continue
                    if produced == 0:
                        self._on_connected(started)
                    produced += 1
                    self._count_decoded()
                    if self._stop.is_set() or not self._deliver(decoded):
                        break
        finally:
            try:
                reader.close()
                if self._pictures is not None:
                    self._pictures.reclaim()
            finally:  # even when closing fails: its counts must not vanish from the stats
                self._add_reader_counters(reader)
                self._timeline.end_pass()
        return produced

    def _add_reader_counters(self, reader: Reader) -> None:
        """Carry what the pass's reader counted into this worker's stats, which outlive the reader."""
        with self._reader_lock:
            self._reader = None
            self._counters.update(reader.counters())  # adds

    def _on_connected(self, started: float) -> None:
        self._first_frame_s = round(time.monotonic() - started, 3)
        self._fps_window, self._decode_fps = (time.monotonic(), 0), 0.0  # a rate of this connection, not the outage
        self._backoff.reset()
        self._refused_backoff.reset()
        self._last_frame_at = time.monotonic()
        if self._segment_wait_s is not None:
            self._segment_wait_s = 0.0
        if self._state is not WorkerState.RUNNING:
            self._set_state(WorkerState.RUNNING)
            log.info("%s: first frame after %.2f s", self.label, self._first_frame_s)

    def _reconnect_after(self, reason: str, backoff: Backoff | None = None) -> None:
        """Wait before the next attempt: by `backoff` (the refusal schedule), else the stream's own."""
        self._set_state(WorkerState.RECONNECTING)
        self._counters["reconnects"] += 1
        delay = (backoff or self._backoff).next_delay()
        self._last_error = mask_url(f"{reason}; retrying in {delay:.1f} s")
        log.warning("%s", self._last_error)
        self._stop.wait(delay)
        outage_ns = time.time_ns() - self._last_wall_ns if self._last_wall_ns else None
        self._timeline.start_pass(outage_ns)

    def _count_decoded(self) -> None:
        self._counters["decoded"] += 1
        t0, n = self._fps_window
        now = time.monotonic()
        if self._segment_wait_s is not None:
            self._segment_wait_s = max(self._segment_wait_s, now - self._last_frame_at)
        self._last_frame_at = now
        if now - t0 >= 1.0:
            self._decode_fps = (n + 1) / (now - t0)
            self._fps_window = (now, 0)
        else:
            self._fps_window = (t0, n + 1)

    def _deliver(self, decoded: DecodedFrame) -> bool:
        """Puts one frame unless the fps cap drops it; False when stopped while waiting for room."""
        pts_ns = self._timeline.map(decoded.pts_ns)
        if not self._cap.keep(pts_ns):
            self._drop(decoded, "dropped_fps_cap")
            return True
        if self.config.pace:
            moment_ns = self._pace(pts_ns)
            if moment_ns is None:
                return False
            self._last_wall_ns = moment_ns
        elif decoded.arrived_ns is None:
            self._last_wall_ns = time.time_ns()
        else:  # a live frame is captured when its packet came; a B-frame's came after the frame shown before it, and
            # a clock stepped back must not hold capture times ahead of it
            self._last_wall_ns = min(max(decoded.arrived_ns, self._last_wall_ns + 1), time.time_ns())
        frame = Frame(self.config.id, self._seq, pts_ns, self._last_wall_ns, decoded.image, decoded.width,
                      decoded.height, decoded.pixel_format, index=self._timeline.index, epoch=self._timeline.epoch)
        if self._realtime:
            self._seq += 1  # a frame the sink refused is a gap in seq: that is how drops show
            if self.sink.put(frame, timeout=0.0):
                self._counters["frames"] += 1
            else:
                self._counters["dropped_sink"] += 1
            return True
        while not self.sink.put(frame, timeout=FILE_PUT_TIMEOUT_S):
            self._counters["sink_waits"] += 1
            if self._stop.is_set():
                return False
        self._seq += 1
        self._counters["frames"] += 1
        return True

    def _drop(self, decoded: DecodedFrame, counter: str) -> None:
        self._counters[counter] += 1
        if self._pictures is not None:
            self._pictures.discard(decoded.image)

    def _pace(self, pts_ns: int) -> int | None:
        """Waits for the frame's moment (`pace`: the first frame's clock plus its pts offset) and returns that
        moment on the wall clock, the frame's capture time, so a frame decoded late carries its lateness into
        the latency downstream; None when stopped while waiting. A frame later than one frame period is
        counted in `paced_late`: decoding does not keep up with the file's own rate."""
        now = time.monotonic_ns()
        if self._pace_origin is None:
            self._pace_origin = (now, time.time_ns(), pts_ns)
        origin_mono, origin_wall, origin_pts = self._pace_origin
        offset = pts_ns - origin_pts
        due = origin_mono + offset
        if due > now:
            if self._stop.wait((due - now) / 1e9):
                return None
        elif now - due > max(self._timeline.period_ns, 1):
            self._counters["paced_late"] += 1
        return origin_wall + offset
