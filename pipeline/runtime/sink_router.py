"""Runs the per-stream stages and the sinks off the inference thread, per stream in frame order.

Streams are sharded over `workers` threads by a stable hash, so one stream's frames always go
through the same thread (order kept) while different streams proceed in parallel. Each worker has
a bounded queue; when it is full, inference waits (back-pressure) rather than dropping results.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import Counter
from typing import Callable

from pipeline.errors import SinkError
from pipeline.runtime.queues import BoundedQueue, Overflow, QueueClosed, QueueEmpty
from pipeline.sinks.base import Sink, StreamStage
from pipeline.types import Event, FrameResult

log = logging.getLogger(__name__)

StageFactory = Callable[[str], list[StreamStage]]


class _End:
    __slots__ = ("stream_id", "ts_ns")

    def __init__(self, stream_id: str, ts_ns: int):
        self.stream_id, self.ts_ns = stream_id, ts_ns


class SinkRouter:
    """Fan FrameResults out to per-stream stages, then the event outbox, then the shared sinks.

    `stage_factory(stream_id)` builds that stream's stages (tracker, analytics) on first use.
    `publish_events(events)` hands events to the durable outbox. A failing stage or sink is logged,
    counted in `failures` and skipped for that frame; it never stops detection or the other sinks.
    """

    def __init__(
        self,
        sinks: list[Sink],
        stage_factory: StageFactory,
        publish_events: Callable[[list[Event]], None],
        workers: int = 2,
        queue_size: int = 256,
    ):
        self._sinks = sinks
        self._stage_factory = stage_factory
        self._publish = publish_events
        self._queues = [BoundedQueue(queue_size, Overflow.BLOCK, name=f"sinks:{i}") for i in range(workers)]
        self._stages: dict[str, list[StreamStage]] = {}
        self._last_ts: dict[str, int] = {}
        self.failures: Counter[str] = Counter()
        self.events_published = 0
        self._threads = [
            threading.Thread(target=self._loop, args=(q,), name=f"sinks:{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def start(self) -> None:
        for sink in self._sinks:
            sink.open()
        for t in self._threads:
            t.start()

    def submit(self, result: FrameResult) -> None:
        """Queue one frame's result; waits while that stream's worker is busy (results are never dropped)."""
        self._put(self._shard(result.frame.stream_id), result)

    def end_stream(self, stream_id: str, ts_ns: int) -> None:
        self._put(self._shard(stream_id), _End(stream_id, ts_ns))

    def close(self, timeout: float = 30.0) -> bool:
        """Finish every queued frame, end every stream still open, flush the sinks. True if all drained."""
        for q in self._queues:
            q.close()  # workers finish what is queued, then see QueueClosed
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not any(t.is_alive() for t in self._threads)
        for sink in self._sinks:
            self._guard(sink.name, sink.close)
        return drained

    def depths(self) -> list[int]:
        return [len(q) for q in self._queues]

    def _shard(self, stream_id: str) -> BoundedQueue:
        return self._queues[zlib.crc32(stream_id.encode()) % len(self._queues)]

    def _put(self, q: BoundedQueue, item) -> None:
        worker = self._threads[self._queues.index(q)]
        while not q.put(item, timeout=1.0):
            if not worker.is_alive():
                raise SinkError("sink workers are gone; results cannot be delivered (see the log for the cause)")

    def _loop(self, q: BoundedQueue) -> None:
        while True:
            try:
                item = q.get(timeout=1.0)
            except QueueEmpty:
                continue
            except QueueClosed:
                break
            if isinstance(item, _End):
                self._finish_stream(item.stream_id, item.ts_ns)
            else:
                self._handle(item)
        for stream_id in [s for s in list(self._stages) if self._shard(s) is q]:
            self._finish_stream(stream_id, self._last_ts.get(stream_id, 0))

    def _handle(self, result: FrameResult) -> None:
        stream_id = result.frame.stream_id
        stages = self._stages.get(stream_id)
        if stages is None:
            stages = self._stages[stream_id] = self._guard("stage factory", self._stage_factory, stream_id) or []
        self._last_ts[stream_id] = result.frame.pts_ns
        for stage in stages:
            self._guard(type(stage).__name__, stage.process, result)
        if result.events:
            self._guard("outbox", self._publish, list(result.events))
            self.events_published += len(result.events)
        for sink in self._sinks:
            self._guard(sink.name, sink.on_frame, result)

    def _finish_stream(self, stream_id: str, ts_ns: int) -> None:
        stages = self._stages.pop(stream_id, None)
        if stages is None:
            return
        events: list[Event] = []
        for stage in stages:
            events.extend(self._guard(type(stage).__name__, stage.end, ts_ns) or [])
        if events:
            self._guard("outbox", self._publish, events)
            self.events_published += len(events)
            for sink in self._sinks:
                on_events = getattr(sink, "on_events", None)
                if on_events is not None:
                    self._guard(sink.name, on_events, stream_id, events)
        for sink in self._sinks:
            self._guard(sink.name, sink.on_stream_end, stream_id)

    def _guard(self, name: str, fn, *args):
        # The isolation boundary of the design: one failing sink must not stop the others.
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001
            self.failures[name] += 1
            if self.failures[name] in (1, 10, 100) or self.failures[name] % 1000 == 0:
                log.exception("sink '%s' failed (%d failures so far); it keeps running", name, self.failures[name])
            return None
