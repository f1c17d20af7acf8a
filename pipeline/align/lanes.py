"""Per-stream rings and the lanes that batch them. Not thread-safe: `AlignedBuffer` holds the lock.

A `StreamRing` holds one stream's waiting frames with their arrival time in the buffer. A `Lane`
groups the rings of the streams that joined it and decides, from its `LaneConfig`, when a batch
is due (full, deadline, or no more frames can come) and which frames form it (round-robin).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from pipeline.config.models import LaneConfig
from pipeline.types import Frame

_NS_PER_MS = 1_000_000
_TOTALS = ("received", "batched", "dropped_overflow", "dropped_age")


@dataclass(eq=False)
class StreamRing:
    """One stream's waiting frames as `(arrival_ns, Frame)`, oldest first.

    A `live` ring drops its oldest frame when full (fresh frames matter more than old ones); a
    file's ring makes the reader wait for a permit, so files lose nothing. `permits` counts the room
    left for frames of this stream, in the ring or on their way to it: a producer takes one per
    frame, and every frame that leaves the ring (batched or dropped) gives its permit back.
    """

    stream_id: str
    lane: str
    capacity: int
    live: bool
    permits: threading.Semaphore
    entries: deque = field(default_factory=deque)
    ended: bool = False
    end_reported: bool = False  # `AlignedBuffer.take_ended` has told the consumer
    removing: bool = False  # forget the ring once its end is reported
    received: int = 0
    batched: int = 0
    dropped_overflow: int = 0
    dropped_age: int = 0

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.capacity

    def counters(self) -> dict:
        return {
            "lane": self.lane,
            "live": self.live,
            "received": self.received,
            "batched": self.batched,
            "dropped_overflow": self.dropped_overflow,
            "dropped_age": self.dropped_age,
            "depth": len(self.entries),
            "ended": self.ended,
        }


class Lane:
    """The batching policy of one lane over its streams' rings.

    `depth` is the number of frames waiting in all of the lane's rings.
    """

    def __init__(self, config: LaneConfig, rings: list[StreamRing]):
        self.rings = list(rings)
        self.depth = 0
        self.batches = 0
        self.frames = 0
        self._removed = dict.fromkeys(_TOTALS, 0)  # the totals of the streams that left the lane
        self._cursor = 0
        self.configure(config)

    def configure(self, config: LaneConfig) -> None:
        """New settings (priority, max_batch, max_wait_ms, max_age_ms); the frames waiting stay."""
        self.config = config
        self._max_wait_ns = round(config.max_wait_ms * _NS_PER_MS)
        self._max_age_ns = round(config.max_age_ms * _NS_PER_MS)
        # A live frame's batch goes a quarter of max_age_ms before the frame would be too old: a consumer wakes a little
        # after its deadline, and at the age itself `drop_aged` would take the frame first.
        self._live_wait_ns = min(self._max_wait_ns, self._max_age_ns * 3 // 4)

    @property
    def name(self) -> str:
        return self.config.name

    def push(self, ring: StreamRing, frame: Frame, now_ns: int) -> bool:
        """Store `frame` (its permit is taken, so the ring has room); True when a consumer should look again."""
        ring.entries.append((now_ns, frame))
        ring.received += 1
        self.depth += 1
        # Only these change what a waiting consumer computed: a new earliest deadline, a full
        # batch, or a full ring (the lane may now be unable to grow).
        return self.depth == 1 or self.depth >= self.config.max_batch or ring.full

    def drop_oldest(self, ring: StreamRing) -> None:
        """Make room in a full live ring: its oldest frame goes (counted in `dropped_overflow`)."""
        ring.entries.popleft()
        ring.dropped_overflow += 1
        ring.permits.release()
        self.depth -= 1

    def drop_aged(self, now_ns: int) -> None:
        """Drop live frames that arrived more than `max_age_ms` ago (counted in `dropped_age`)."""
        cutoff = now_ns - self._max_age_ns
        for ring in self.rings:
            if not ring.live:
                continue
            while ring.entries and ring.entries[0][0] < cutoff:
                ring.entries.popleft()
                ring.dropped_age += 1
                ring.permits.release()
                self.depth -= 1

    def oldest_arrival(self) -> int | None:
        """Arrival time (ns) of the frame that has waited longest, or None when the lane is empty."""
        fronts = [ring.entries[0][0] for ring in self.rings if ring.entries]
        return min(fronts) if fronts else None

    def due(self, now_ns: int) -> tuple[bool, int | None]:
        """(ready now, deadline in ns when not ready yet). An empty lane is (False, None).

        Ready when `max_batch` frames wait, when the oldest waited `max_wait_ms` (a live frame: or
        three quarters of `max_age_ms`, if that is less), or when no stream of the lane can add a frame (each has ended
        or has a full ring: flush the tail). A lane never waits for one particular stream, so a stalled
        camera delays no one.
        """
        fronts = [ring.entries[0][0] + (self._live_wait_ns if ring.live else self._max_wait_ns)
                  for ring in self.rings if ring.entries]
        if not fronts:
            return False, None
        deadline = min(fronts)
        if self.depth >= self.config.max_batch or now_ns >= deadline:
            return True, None
        if all(ring.ended or ring.full for ring in self.rings):
            return True, None
        return False, deadline

    def add(self, ring: StreamRing) -> None:
        self.rings.append(ring)

    def remove(self, ring: StreamRing) -> None:
        """Forget an empty ring; the round-robin goes on with the stream that would have come next."""
        i = self.rings.index(ring)
        self.rings.pop(i)
        for key in _TOTALS:
            self._removed[key] += getattr(ring, key)
        if i < self._cursor:
            self._cursor -= 1
        self._cursor = self._cursor % len(self.rings) if self.rings else 0

    def take(self) -> list[Frame]:
        """Up to `max_batch` frames, one per stream per round, starting after the last stream served.

        Returns the frames in batch order (each stream's frames stay in arrival order).
        """
        frames: list[Frame] = []
        count = len(self.rings)
        i = self._cursor
        while len(frames) < self.config.max_batch and self.depth > 0:
            ring = self.rings[i]
            i = (i + 1) % count
            if ring.entries:
                frames.append(ring.entries.popleft()[1])
                ring.permits.release()
                ring.batched += 1
                self.depth -= 1
        self._cursor = i
        self.batches += 1
        self.frames += len(frames)
        return frames

    def counters(self) -> dict:
        rings = [ring.counters() for ring in self.rings]
        total = {key: self._removed[key] + sum(r[key] for r in rings) for key in _TOTALS}
        return {
            "priority": self.config.priority,
            "streams": [ring.stream_id for ring in self.rings],
            **total,
            "depth": self.depth,
            "batches": self.batches,
            "frames": self.frames,
            "mean_batch_size": self.frames / self.batches if self.batches else 0.0,
        }
