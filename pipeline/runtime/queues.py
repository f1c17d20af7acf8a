"""Bounded queues that say what happens when they are full, and count every drop.

Every blocking call takes a timeout; `close()` wakes every waiter so a stage checking its stop
event can leave promptly.
"""
from __future__ import annotations

import enum
import threading
import time
from collections import deque
from typing import Generic, TypeVar

from pipeline.errors import PipelineError

T = TypeVar("T")


class Overflow(enum.Enum):
    """What `put` does when the queue is full.

    BLOCK waits for room (nothing is lost, the producer slows down); DROP_OLDEST evicts the entry
    that has waited longest (fresh data wins: live video); DROP_NEWEST refuses the new item (the
    backlog wins). Every drop is counted in `dropped`.
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


class QueueClosed(PipelineError):
    """The queue was closed: `put` is refused, and `get` finds it closed and empty."""


class QueueEmpty(PipelineError):
    """`get` timed out with nothing to return; try again unless your stop event is set."""


class BoundedQueue(Generic[T]):
    """A thread-safe FIFO holding at most `maxsize` (in items, or in the weights they were put with)
    with a named overflow policy.

    Args:
        maxsize: capacity in items or weight (>= 1); larger absorbs bursts but adds latency and memory.
            An item heavier than the whole capacity is taken when the queue is empty.
        overflow: what `put` does when full (see `Overflow`).
        name: used in error messages and stats, e.g. "sink:cam-3".
    """

    def __init__(self, maxsize: int, overflow: Overflow = Overflow.BLOCK, name: str = "queue"):
        if maxsize < 1:
            raise ValueError(f"queue '{name}': maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.overflow = overflow
        self.name = name
        self.dropped = 0
        self.put_count = 0
        self.get_count = 0
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._items: deque = deque()  # (item, weight)
        self._size = 0  # the weights of `_items`

    def put(self, item: T, timeout: float | None = None, weight: int = 1) -> bool:
        """Add `item` (counting `weight` against the capacity, e.g. the frames it holds); True when it was
        stored, False when it was refused or timed out.

        BLOCK waits at most `timeout` seconds for room (required for BLOCK); DROP_OLDEST always
        stores (evicting, counted); DROP_NEWEST returns False when full (counted).
        Raises `QueueClosed` after `close()`.
        """
        with self._lock:
            self._check_open()
            if self._full(weight) and not self._make_room(timeout, weight):
                return False
            self._items.append((item, weight))
            self._size += weight
            self.put_count += 1
            self._not_empty.notify()
            return True

    def get(self, timeout: float) -> T:
        """The next item, waiting at most `timeout` seconds.

        Raises `QueueEmpty` on timeout and `QueueClosed` once the queue is closed and drained
        (items put before `close()` are still delivered).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._items) == 0:
                if self._closed:
                    raise QueueClosed(f"queue '{self.name}' is closed and empty")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueEmpty(f"queue '{self.name}' had nothing within {timeout:.3f} s")
                self._not_empty.wait(remaining)
            item, weight = self._items.popleft()
            self._size -= weight
            self.get_count += 1
            self._not_full.notify()
            return item

    def close(self) -> None:
        """Refuse further puts and wake every waiting producer and consumer."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """What the queue holds: its items' weights (the item count when every weight is 1)."""
        with self._lock:
            return self._size

    def stats(self) -> dict:
        """Counters: depth (weight), capacity, put, got, dropped, overflow policy."""
        with self._lock:
            return {
                "depth": self._size,
                "capacity": self.maxsize,
                "put": self.put_count,
                "got": self.get_count,
                "dropped": self.dropped,
                "overflow": self.overflow.value,
            }

    # -- internals ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosed(f"queue '{self.name}' is closed; the stage feeding it should stop")

    def _full(self, weight: int) -> bool:
        return self._size > 0 and self._size + weight > self.maxsize

    def _make_room(self, timeout: float | None, weight: int) -> bool:
        """Called with the lock held and the queue full; True when there is now room for `weight`."""
        if self.overflow is Overflow.DROP_OLDEST:
            while self._full(weight):
                self._size -= self._items.popleft()[1]
                self.dropped += 1
            return True
        if self.overflow is Overflow.DROP_NEWEST:
            self.dropped += 1
            return False
        if timeout is None:
            raise ValueError(f"queue '{self.name}' blocks when full: put() needs a timeout in seconds")
        deadline = time.monotonic() + timeout
        while self._full(weight):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._not_full.wait(remaining)
            self._check_open()
        return True
