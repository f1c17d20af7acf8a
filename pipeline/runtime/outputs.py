"""The frame sinks, each behind a bounded queue and a thread of its own (`sink:<name>`).

A slow or hung sink (a database that stalls, a full disk) holds back only itself: when its queue is
full, a live camera's oldest waiting frame is dropped (its `overflow: drop_oldest`, counted per stream)
so the stages and detection go on; file frames, frames that carry events and the stream start/end
markers always wait for room (nothing of theirs is lost). `overflow: block` makes live frames wait too.
A failing callback is isolated, counted and logged; the sink keeps getting the next frames.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable

from pipeline.config.outputs import FrameSinkOptions
from pipeline.errors import SinkError
from pipeline.sinks.base import Sink
from pipeline.types import Event, FrameResult

log = logging.getLogger(__name__)

PUT_WAIT_S = 1.0
"""How long a waiting put sleeps before it checks that the sink's thread is still there."""


def guarded(failures: Counter, name: str, fn, *args, **kwargs) -> Any:
    """Call `fn(*args)`; an exception is counted under `name` and logged (the 1st, 10th, 100th, every
    1000th), and None returned: the isolation boundary of every stage and sink."""
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - one failing part must not stop the others
        failures[name] += 1
        if failures[name] in (1, 10, 100) or failures[name] % 1000 == 0:
            log.exception("'%s' failed (%d failures so far); it keeps running", name, failures[name])
        return None


class _Countdown:
    """Runs `then()` once `count` sinks have each called `done()`."""

    def __init__(self, count: int, then: Callable[[], None]):
        self._left, self._then, self._lock = count, then, threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._then()


class SinkQueue:
    """One sink, its queue of (callback name, arguments, droppable stream or None) and its thread."""

    def __init__(self, sink: Sink, options: FrameSinkOptions, failures: Counter):
        self.sink = sink
        self.capacity = options.queue_size
        self.block_live = options.overflow == "block"
        self.dropped: Counter[str] = Counter()  # per stream
        self._failures = failures
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sink:{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, method: str, *args, live_stream: str | None = None, after: _Countdown | None = None) -> None:
        """Queue `sink.<method>(*args)`; `live_stream` marks a live frame without events, which may be
        dropped (per `overflow`) instead of waiting for room; `after` counts down once it has run."""
        droppable = live_stream if not self.block_live else None
        with self._cond:
            while len(self._items) >= self.capacity and not self._closed:
                if droppable is not None and self._drop_oldest_locked():
                    break
                if not self._cond.wait(PUT_WAIT_S) and not self._thread.is_alive():
                    raise SinkError(f"sink '{self.sink.name}': its thread is gone; see the log for the cause")
            self._items.append((method, args, droppable, after))
            self._cond.notify_all()

    def _drop_oldest_locked(self) -> bool:
        for i, (_, _, stream, _) in enumerate(self._items):
            if stream is not None:
                del self._items[i]
                self.dropped[stream] += 1
                return True
        return False

    def close(self, deadline: float) -> bool:
        """Deliver what is queued, close the sink; False when that did not finish by `deadline` (monotonic s)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.ident is None:  # never opened
            return True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("sink '%s' still busy at shutdown with %d items queued", self.sink.name, len(self._items))
            return False
        guarded(self._failures, self.sink.name, self.sink.close)
        return True

    def depth(self) -> int:
        return len(self._items)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait(PUT_WAIT_S)
                if not self._items:
                    return
                method, args, _, after = self._items.popleft()
                self._cond.notify_all()
            guarded(self._failures, self.sink.name, getattr(self.sink, method), *args)
            if after is not None:
                guarded(self._failures, self.sink.name, after.done)


class OutputSinks:
    """Every frame sink of the pipeline; fed by the stage workers, per stream in frame order."""

    def __init__(self, sinks: list[tuple[Sink, FrameSinkOptions]]):
        self.failures: Counter[str] = Counter()
        self._queues = [SinkQueue(sink, options, self.failures) for sink, options in sinks]

    @property
    def sinks(self) -> list[Sink]:
        return [q.sink for q in self._queues]

    def open(self) -> None:
        """Open every sink and start its thread; SinkError when one cannot start (the ones before it
        are running and close as usual, the rest are never opened)."""
        for q in self._queues:
            q.sink.open()
            q.start()

    def start_stream(self, stream_id: str, url: str) -> None:
        self._each("on_stream_start", stream_id, url)

    def submit(self, result: FrameResult, live: bool) -> None:
        droppable = result.frame.stream_id if live and not result.events else None
        for q in self._queues:
            guarded(self.failures, q.sink.name, q.put, "on_frame", result, live_stream=droppable)

    def events(self, stream_id: str, events: list[Event]) -> None:
        self._each("on_events", stream_id, events)

    def end_stream(self, stream_id: str, then: Callable[[str], None] | None = None) -> None:
        """Queue the stream's end to every sink; `then(stream_id)` runs once all of them have handled it."""
        countdown = _Countdown(len(self._queues), lambda: then(stream_id)) if then is not None else None
        for q in self._queues:
            guarded(self.failures, q.sink.name, q.put, "on_stream_end", stream_id, after=countdown)
        if countdown is not None and not self._queues:
            then(stream_id)

    def close(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        return all([q.close(deadline) for q in self._queues])

    def stats(self) -> dict[str, dict]:
        """Per sink: its own counters, queue depth, and the frames dropped per stream."""
        return {q.sink.name: {**(guarded(self.failures, q.sink.name, q.sink.stats) or {}), "queued": q.depth(),
                              "dropped": dict(q.dropped)} for q in self._queues}

    def _each(self, method: str, *args) -> None:
        for q in self._queues:
            guarded(self.failures, q.sink.name, q.put, method, *args)
