"""AlignedBuffer: per-stream rings feeding priority lanes that form detector batches.

Producers (one decode thread per stream) call `put` and, in `finally`, `end_stream`; one or more
consumers call `next_batch(timeout)` and `take_ended()` (the streams whose last frame they have taken).
Streams can be added and removed while it runs (`add_stream`, `remove_stream`) without pausing the others. The batcher serves the highest-priority lane that is ready
(full, or its oldest frame waited `max_wait_ms`, or none of its streams can add a frame); streams
within a lane are taken round-robin; live frames older than `max_age_ms` are dropped and counted.
Live rings drop their oldest frame when full; file rings make the reader wait, so files lose nothing.

Producers share no lock: a frame goes into an inbox (a `deque`, whose append needs no Python lock)
with its arrival time, after the producer took one of its ring's permits (a per-stream semaphore: a
file reader waits on it, a live producer whose ring is full drains the inbox itself and drops its
oldest frame), and a wake-up token goes into a `queue.SimpleQueue` that waiting consumers sleep on.
Only a thread holding the buffer's lock takes frames out of the inbox, all it holds, in order: a
consumer that took a frame while another thread drained the ones after it put them in the ring out of
order (and a stream's last frame accepted after its end marker reopened the stream for good). One lock
shared by 64 decode threads and the consumer formed convoys under the interpreter lock: the thread
holding it was often waiting for the interpreter lock, and every other thread queued behind it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable

from pipeline.align.lanes import Lane, StreamRing
from pipeline.config.models import LaneConfig, StreamConfig
from pipeline.errors import ConfigError
from pipeline.types import Frame, FrameBatch

_NS_PER_S = 1_000_000_000
_WAKE = "wake"
"""A token that makes a waiting consumer look again (close, work left for another consumer)."""
_ARRIVED = "arrived"
"""A token for an item put in the inbox: a waiting consumer drains it."""


class AlignedBuffer:
    """Thread-safe frame buffer with priority lanes; implements the `FrameSink` the workers call.

    Args:
        lanes: lane policies; every stream's `lane` must name one of them.
        streams: the streams that will put frames; `ring_size` bounds each stream's backlog,
            `realtime` picks the overflow policy (live: drop oldest, file: block the reader).
        clock_ns: monotonic clock in integer nanoseconds for arrival times and deadlines;
            tests inject a fake one to make deadlines deterministic.
    """

    def __init__(
        self,
        lanes: list[LaneConfig],
        streams: list[StreamConfig] = (),
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ):
        if len({lane.name for lane in lanes}) != len(lanes):
            raise ConfigError(f"lane names must be unique, got {[lane.name for lane in lanes]}")
        self._clock = clock_ns
        self._lock = threading.Lock()  # rings and lanes: consumers, and producers of overflowing live rings
        self._inbox: deque = deque()  # (ring, arrival_ns, frame | None = end of stream), taken under the lock
        self._tokens: queue.SimpleQueue = queue.SimpleQueue()  # _ARRIVED per inbox item, or _WAKE
        self._closed = False
        self._rings: dict[str, StreamRing] = {}
        self._lanes = [Lane(cfg, []) for cfg in sorted(lanes, key=lambda c: -c.priority)]
        self._lane_of = {lane.name: lane for lane in self._lanes}
        for cfg in streams:
            self.add_stream(cfg)

    def set_lanes(self, lanes: list[LaneConfig]) -> None:
        """Change the lanes while running: settings of existing lanes change in place (their frames stay),
        new lanes are added, lanes left out go (ConfigError, and nothing changes, if a stream is in one)."""
        with self._lock:
            wanted = {cfg.name: cfg for cfg in lanes}
            busy = sorted(name for name, lane in self._lane_of.items() if name not in wanted and lane.rings)
            if busy:
                raise ConfigError(f"lanes: lane '{busy[0]}' still has streams "
                                  f"{[r.stream_id for r in self._lane_of[busy[0]].rings]}; move or remove them first")
            for name, cfg in wanted.items():
                if name in self._lane_of:
                    self._lane_of[name].configure(cfg)
                else:
                    self._lane_of[name] = Lane(cfg, [])
            self._lane_of = {name: self._lane_of[name] for name in wanted}
            self._lanes = sorted(self._lane_of.values(), key=lambda lane: -lane.config.priority)
        self._tokens.put(_WAKE)  # a waiting consumer recomputes its deadlines

    def add_stream(self, cfg: StreamConfig) -> None:
        """A new stream (before its producer starts): a ring of `ring_size` in its lane; live streams drop
        their oldest frame when the ring is full, files wait. ConfigError for an unknown lane or a taken id."""
        with self._lock:
            if cfg.lane not in self._lane_of:
                raise ConfigError(f"stream '{cfg.id}' joins unknown lane '{cfg.lane}'; defined lanes: {sorted(self._lane_of)}")
            if cfg.id in self._rings:
                raise ConfigError(f"stream id '{cfg.id}' appears twice; stream ids must be unique")
            ring = StreamRing(cfg.id, cfg.lane, cfg.ring_size, cfg.realtime, threading.Semaphore(cfg.ring_size))
            self._rings[cfg.id] = ring
            self._lane_of[cfg.lane].add(ring)

    def remove_stream(self, stream_id: str) -> None:
        """Forget a stream once its producer has ended it and its last frame was taken (`take_ended`
        reports it one last time). Stop its producer too; the other streams are not touched."""
        with self._lock:
            ring = self._ring(stream_id)
            ring.removing = True
            if ring.end_reported:
                self._forget_locked(ring)

    # -- producers (FrameSink) ---------------------------------------------------------------------
    def put(self, frame: Frame, timeout: float) -> bool:
        """Hand one decoded frame to its stream's ring.

        Live streams never block: a full ring drops its oldest frame (counted). Files wait up to
        `timeout` seconds for room and return False if there is still none; the worker retries
        while it is not stopped. After `close()` every put returns False (files after `timeout`).
        A put after `end_stream` reopens the stream (a restarted worker).
        """
        ring = self._ring(frame.stream_id)
        if self._closed:
            if not ring.live:
                time.sleep(timeout)  # a retrying file worker must not spin
            return False
        if ring.live:
            if not ring.permits.acquire(blocking=False):
                return self._put_overflowing(ring, frame)
        elif not ring.permits.acquire(timeout=timeout):
            return False
        self._inbox.append((ring, self._clock(), frame))
        self._tokens.put(_ARRIVED)
        return True

    def _put_overflowing(self, ring: StreamRing, frame: Frame) -> bool:
        """A live frame whose ring is full (counting frames still in the inbox): drop the oldest."""
        with self._lock:
            self._drain_locked()
            if not ring.permits.acquire(blocking=False):  # a consumer may have made room meanwhile
                if not ring.entries:  # the frames in the way are with a consumer on their way in
                    ring.dropped_overflow += 1
                    return True
                self._lane_of[ring.lane].drop_oldest(ring)
                ring.permits.acquire(blocking=False)
            self._accept_locked(ring, self._clock(), frame)
        self._tokens.put(_WAKE)
        return True

    def discard_stream(self, stream_id: str) -> None:
        """Forget a stream whose producer never started (an add that failed half-way)."""
        with self._lock:
            self._drain_aside_locked()
            self._forget_locked(self._ring(stream_id))

    def end_stream(self, stream_id: str) -> None:
        """The stream will send no more frames: its lane may flush the tail without waiting for it."""
        self._inbox.append((self._ring(stream_id), 0, None))
        self._tokens.put(_ARRIVED)

    def take_ended(self) -> list[str]:
        """The streams that have ended and whose every frame has been taken, each reported once (the
        consumer's cue to end that stream downstream, after the batches taken before this call)."""
        with self._lock:
            self._drain_aside_locked()
            ended = [ring for ring in self._rings.values() if ring.ended and not ring.entries and not ring.end_reported]
            for ring in ended:
                ring.end_reported = True
                if ring.removing:
                    self._forget_locked(ring)
            return [ring.stream_id for ring in ended]

    def on_room(self, stream_id: str, callback: Callable[[int], None]) -> None:
        """Call `callback(n)` whenever `n` frames of `stream_id` leave its ring (batched or dropped).

        For a producer in another process that mirrors the ring's permits as credits: each call
        lets it send `n` more frames. Must be set before the stream's first `put`; runs with the
        buffer's lock held, so it must be quick and must not call back into the buffer.
        """
        ring = self._ring(stream_id)
        ring.permits = _NotifyingSemaphore(ring.capacity, callback)

    # -- consumers ---------------------------------------------------------------------------------
    def next_batch(self, timeout: float) -> FrameBatch | None:
        """The next batch, waiting at most `timeout` seconds; None on timeout, when closed, or finished.

        Sleeps on the inbox until a producer hands over a frame that may make a lane ready or the
        earliest lane deadline expires, whichever comes first (no polling).
        """
        end = time.monotonic() + timeout
        look, deadline_ns = True, None
        while True:
            with self._lock:
                look |= self._drain_locked()
                now = self._clock()
                if look or (deadline_ns is not None and now >= deadline_ns):
                    lane, deadline_ns = self._pick_lane(now)
                    if lane is not None:
                        return self._form_batch(lane)
                    if self._closed:
                        self._tokens.put(_WAKE)  # other waiting consumers see it too
                        return None
                    if self._finished_locked():  # not woken again: they see it within their timeout (`wait`)
                        return None
                    look = False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            if deadline_ns is not None:
                remaining = min(remaining, max(deadline_ns - now, 0) / _NS_PER_S)
            try:
                look |= self._tokens.get(timeout=remaining) is _WAKE
            except queue.Empty:
                pass

    def wait(self, timeout: float) -> None:
        """Block until a producer hands something over, the lanes change or the buffer closes (at most `timeout`
        seconds): what a consumer does when `next_batch` answered None at once because the buffer was finished
        (every stream ended, or none was added yet), instead of asking again in a busy loop."""
        try:
            self._tokens.get(timeout=timeout)  # taken: the next `next_batch` drains and looks at everything anyway
        except queue.Empty:
            pass

    def close(self) -> None:
        """Wake every waiting consumer; later puts are refused and `next_batch` returns None."""
        with self._lock:
            self._closed = True
        self._tokens.put(_WAKE)

    @property
    def finished(self) -> bool:
        """True when every stream has ended and every ring is empty."""
        with self._lock:
            self._drain_aside_locked()
            return self._finished_locked()

    def stats(self) -> dict:
        """Counters: `streams[id]` and `lanes[name]` with received, batched, dropped_overflow,
        dropped_age, depth; lanes also have batches, frames and mean_batch_size."""
        with self._lock:
            self._drain_aside_locked()
            return {
                "streams": {sid: ring.counters() for sid, ring in self._rings.items()},
                "lanes": {lane.name: lane.counters() for lane in self._lanes},
            }

    # -- internals (lock held) ---------------------------------------------------------------------
    def _ring(self, stream_id: str) -> StreamRing:
        ring = self._rings.get(stream_id)
        if ring is None:
            raise ConfigError(f"stream '{stream_id}' is not one of this buffer's streams {sorted(self._rings)}; add it to `streams:`")
        return ring

    def _forget_locked(self, ring: StreamRing) -> None:
        del self._rings[ring.stream_id]
        self._lane_of[ring.lane].remove(ring)

    def _drain_locked(self) -> bool:
        """Move everything in the inbox into the rings, in order; True when a consumer should look again.
        The tokens are taken first: each stands for an item already in the inbox, so none is left waiting."""
        look = False
        while True:
            try:
                look |= self._tokens.get_nowait() is _WAKE
            except queue.Empty:
                break
        while self._inbox:
            look |= self._accept_locked(*self._inbox.popleft())
        return look

    def _drain_aside_locked(self) -> None:
        """Drain outside `next_batch` (counters, ends): what would have made a waiting consumer look again, and the
        tokens taken here that it sleeps on, are handed on to it as a wake-up."""
        if self._drain_locked():
            self._tokens.put(_WAKE)

    def _accept_locked(self, ring: StreamRing, arrival_ns: int, frame: Frame | None) -> bool:
        if self._rings.get(ring.stream_id) is not ring:  # removed while this was on its way
            return False
        if frame is None:  # end of stream
            ring.ended = True
            return True
        ring.ended = ring.end_reported = False
        return self._lane_of[ring.lane].push(ring, frame, arrival_ns)

    def _finished_locked(self) -> bool:
        return all(ring.ended and not ring.entries for ring in self._rings.values())

    def _pick_lane(self, now_ns: int) -> tuple[Lane | None, int | None]:
        """The lane to serve now (highest priority, then oldest frame) or (None, earliest deadline)."""
        best: Lane | None = None
        best_key = None
        earliest: int | None = None
        for lane in self._lanes:
            lane.drop_aged(now_ns)
            ready, deadline = lane.due(now_ns)
            if ready:
                key = (-lane.config.priority, lane.oldest_arrival())
                if best_key is None or key < best_key:
                    best, best_key = lane, key
            elif deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        return best, earliest

    def _form_batch(self, lane: Lane) -> FrameBatch:
        frames = lane.take()
        if any(other.depth for other in self._lanes):
            self._tokens.put(_WAKE)  # another consumer may serve the rest
        return FrameBatch(frames=frames, lane=lane.name, formed_ns=self._clock())


class _NotifyingSemaphore(threading.Semaphore):
    """A ring's permits that also report every release (see `AlignedBuffer.on_room`)."""

    def __init__(self, value: int, callback: Callable[[int], None]):
        super().__init__(value)
        self._callback = callback

    def release(self, n: int = 1) -> None:
        super().release(n)
        self._callback(n)
