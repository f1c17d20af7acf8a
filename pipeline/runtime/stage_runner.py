"""Runs each stream's stages (tracker, analytics, `stages:` plugins) off the inference thread, in frame
order, then names their events (class name, the media files they will have), publishes them and hands
every result to the frame sinks.

Streams are sharded over `workers` threads by a stable hash, so one stream's frames always go through
the same thread (order kept) while different streams proceed in parallel. A detected batch crosses
as one item per worker, split into frames there (the inference thread is the pipeline's busiest). Each
worker has a bounded queue; when it is full, inference waits (back-pressure): the stages are cheap and
their results are never dropped. What is slow (storage, clips) sits behind the frame sinks' own queues instead
(`pipeline.runtime.outputs`), so it cannot hold the stages back for live cameras.
"""
from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import replace
from typing import Callable, Sequence

from pipeline.errors import PipelineError, SinkError
from pipeline.runtime.outputs import OutputSinks, guarded
from pipeline.runtime.queues import BoundedQueue, Overflow, QueueClosed, QueueEmpty
from pipeline.stages import StreamStage
from pipeline.types import Detections, Event, Frame, FrameResult, Moment, class_name

log = logging.getLogger(__name__)

SINKS = "sinks"
"""What a worker is in while it hands a result to the sinks (`give_up_hung`)."""

StageFactory = Callable[[str], list[StreamStage]]
Restage = Callable[[str, list[StreamStage], Moment], tuple[list[StreamStage], list[Event]]]


class _Start:
    __slots__ = ("stream_id", "stages", "live")

    def __init__(self, stream_id: str, stages: list[StreamStage], live: bool):
        self.stream_id, self.stages, self.live = stream_id, stages, live


class _Batch:
    """The frames of one detected batch that belong to one worker's streams, each with its row in the
    batch, and the batch's detections (sorted by row; row r's are from bounds[r] to bounds[r + 1])."""

    __slots__ = ("frames", "detections", "bounds")

    def __init__(self, frames: list[tuple[int, Frame]], detections: Detections, bounds):
        self.frames, self.detections, self.bounds = frames, detections, bounds

    def results(self, run_id: str):
        for row, frame in self.frames:
            yield FrameResult(frame, self.detections.rows(int(self.bounds[row]), int(self.bounds[row + 1])),
                              run_id=run_id)


class _Restage:
    """A change of the running streams' stages, and what each worker answers: the streams it could not change."""

    __slots__ = ("change", "failed", "_left", "_cond")

    def __init__(self, change: Restage, workers: int):
        self.change, self.failed, self._left, self._cond = change, {}, workers, threading.Condition()

    def answer(self, failed: dict[str, str]) -> None:
        with self._cond:
            self.failed.update(failed)
            self._left -= 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._left == 0, timeout)


class _End:
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: str):
        self.stream_id = stream_id


class _Stream:
    """What a worker keeps per stream: its stages, whether it is live, its last frame's moment, frames staged."""

    __slots__ = ("stages", "live", "last", "frames")

    def __init__(self, stages: list[StreamStage], live: bool, start: Moment):
        self.stages, self.live, self.last, self.frames = stages, live, start, 0


class StageRunner:
    """make_stages(stream_id) builds a stream's stages; publish(events) takes events to the outbox. run_id: the
    run every `FrameResult` (and so every event) belongs to; class_names: the model's, which events are named by;
    instance: the instance running it, which every event names.

    A failing stage is logged, counted in the failures under its name and skipped for that frame; it never
    stops the other stages, the stream or detection.
    """

    def __init__(self, make_stages: StageFactory, publish: Callable[[list[Event]], None], outputs: OutputSinks,
                 workers: int = 2, queue_size: int = 256, on_finished: Callable[[str], None] | None = None, *,
                 run_id: str, class_names: Sequence[str] = (), instance: str | None = None):
        """queue_size: frames waiting per worker. on_finished(stream_id): every sink has handled the end of
        the stream."""
        self._on_finished = on_finished
        self.run_id, self.instance = run_id, instance
        self.class_names = list(class_names)
        self._make_stages = make_stages
        self._publish = publish
        self.outputs = outputs
        self.failures = outputs.failures  # one count per part name, stages and sinks alike
        self._queues = [BoundedQueue(queue_size, Overflow.BLOCK, name=f"stages:{i}") for i in range(workers)]
        self._streams: list[dict[str, _Stream]] = [{} for _ in range(workers)]  # per worker
        self._frames: dict[str, int] = {}
        self._threads = [threading.Thread(target=self._loop, args=(i,), name=f"stages:{i}", daemon=True)
                         for i in range(workers)]
        self._abandoned = threading.Event()
        self._calls: list[tuple[str, str, float] | None] = [None] * workers  # per worker: stream, stage, since
        self._given_up: set[int] = set()  # workers hung in a stage's call, no longer waited for

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def add_stream(self, stream_id: str, url: str, live: bool) -> None:
        """Build the stream's stages now (ConfigError for a `stages:` plugin that cannot be made) and
        announce it to the sinks; call before its first frame."""
        stages = self._make_stages(stream_id)
        self.outputs.start_stream(stream_id, url)
        self._put(_Start(stream_id, stages, live))

    def submit_batch(self, frames: list[Frame], detections: Detections, bounds) -> None:
        """Queue a detected batch (detections sorted by frame; frame i's rows from bounds[i] to bounds[i+1]),
        one item per worker; waits while a worker's queue is full (results are never dropped)."""
        pieces: dict[int, list[tuple[int, Frame]]] = {}
        for row, frame in enumerate(frames):
            pieces.setdefault(self._shard(frame.stream_id), []).append((row, frame))
        for shard, mine in pieces.items():
            self._put_to(shard, _Batch(mine, detections, bounds), weight=len(mine))

    def reconfigure(self, make_stages: StageFactory, change: Restage, timeout: float = 10.0) -> None:
        """Streams added from now on get their stages from `make_stages`; each running stream's stages
        become `change(stream_id, stages, last)` -> (stages, events), `last` the moment of its last frame, on
        its worker between two of its frames (its order and state kept), and the events go out as its frames'
        events do. Waits up to `timeout` s for the workers; PipelineError naming the streams whose `change` raised
        (they keep their stages), or when a worker had not taken the change by then."""
        self._make_stages = make_stages
        deadline = time.monotonic() + timeout
        item = _Restage(change, len(self._queues))
        missed = [shard for shard in range(len(self._queues)) if not self._put_to(shard, item, deadline=deadline)]
        for _ in missed:  # a worker whose queue stayed full (a stage or sink hangs) never got it: none to wait for
            item.answer({})
        if missed or not item.wait(max(0.0, deadline - time.monotonic())):
            raise PipelineError(f"the stage workers did not take the change within {timeout:g} s (a stage or a sink "
                                "holds them up); apply the change again once they do")
        if item.failed:
            raise PipelineError("; ".join(f"stream '{stream_id}' keeps its stages: {why}"
                                          for stream_id, why in item.failed.items()))

    def end_stream(self, stream_id: str) -> None:
        """The stream's last frame has been submitted: end its stages (their final events go out), tell
        the sinks, forget it."""
        self._put(_End(stream_id))

    def close(self, timeout: float = 30.0) -> bool:
        """Finish every queued frame and end every stream still open. True if all drained in time."""
        for q in self._queues:
            q.close()  # workers finish what is queued, then see QueueClosed
        deadline = time.monotonic() + timeout
        waited = [t for i, t in enumerate(self._threads) if i not in self._given_up and t.ident is not None]  # started
        for t in waited:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in waited)

    def abandon(self) -> None:
        """Stop waiting for room in the workers' queues: what would wait is dropped (a second stop, which
        abandons buffered frames, must not wait for a stage that hangs)."""
        self._abandoned.set()

    def give_up_hung(self, after_s: float) -> None:
        """Stop waiting for each worker that has been in one call of a stage for `after_s` s or more (a plugin
        that hangs), or waiting that long for room in a sink's queue (a sink that hangs, with a file's frames): what would wait for room in its queue is dropped, and `close` does not wait for it. Logs
        each one, naming its stream and stage. A stop calls this once it has waited `after_s` s."""
        now = time.monotonic()
        for shard, call in enumerate(self._calls):
            if call is None or shard in self._given_up or now - call[2] < after_s:
                continue
            self._given_up.add(shard)
            stream_id, name, since = call
            what = "the sinks (one takes no more frames)" if name == SINKS else f"stage '{name}'"
            log.error("%s of stream '%s' has not returned for %.0f s; the stop goes on without its worker "
                      "stages:%d: the results still to be staged for its streams (%s) are dropped, and their ends not "
                      "delivered", what, stream_id, now - since, shard, ", ".join(sorted(list(self._streams[shard]))))

    def depths(self) -> list[int]:
        return [len(q) for q in self._queues]

    def frames(self) -> dict[str, int]:
        """Frames each stream has had through its stages so far."""
        return dict(self._frames)  # one C-level copy: safe while the workers add streams

    def forget(self, stream_id: str) -> None:
        """A stream removed, after its end went through: its frame count goes (streams come and go for weeks)."""
        self._frames.pop(stream_id, None)

    def _shard(self, stream_id: str) -> int:
        return zlib.crc32(stream_id.encode()) % len(self._queues)

    def _put(self, item: _Start | _End) -> None:
        self._put_to(self._shard(item.stream_id), item)

    def _put_to(self, shard: int, item, weight: int = 1, deadline: float | None = None) -> bool:
        """Queue `item` for worker `shard`, waiting for room; False when it was not queued: the worker is given up
        or abandoned, or its queue stayed full until `deadline` (monotonic seconds; None: no bound)."""
        while shard not in self._given_up:
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            if self._queues[shard].put(item, timeout=wait, weight=weight):
                return True
            if self._abandoned.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            if not self._threads[shard].is_alive():
                raise SinkError("stage workers are gone; results cannot be delivered (see the log for the cause)")
        return False

    def _loop(self, shard: int) -> None:
        streams = self._streams[shard]
        while True:
            try:
                item = self._queues[shard].get(timeout=1.0)
            except QueueEmpty:
                continue
            except QueueClosed:
                break
            if isinstance(item, _Batch):
                for result in item.results(self.run_id):
                    self._handle(shard, streams, result)
            elif isinstance(item, _Start):
                streams[item.stream_id] = _Stream(item.stages, item.live, self._start(item.stream_id))
            elif isinstance(item, _Restage):
                item.answer(self._restage(streams, item.change))
            else:
                self._finish(shard, streams, item.stream_id)
        for stream_id in list(streams):
            self._finish(shard, streams, stream_id)

    def _start(self, stream_id: str) -> Moment:
        """The moment a stream's stages start from, before its first frame (nothing happens at it)."""
        return Moment(self.run_id, stream_id, 0, time.time_ns())

    def _handle(self, shard: int, streams: dict[str, _Stream], result: FrameResult) -> None:
        stream_id = result.frame.stream_id
        stream = streams.get(stream_id)
        if stream is None:  # frames again after the stream ended (a restarted source): start afresh
            stages = guarded(self.failures, "stage factory", self._make_stages, stream_id) or []
            stream = streams[stream_id] = _Stream(stages, True, self._start(stream_id))
        stream.last = result.moment
        for stage in stream.stages:
            self._call(shard, stream_id, stage.name, stage.process, result)
        if result.events:  # naming is guarded too: one malformed event must not stop this worker's streams
            result.events[:] = guarded(self.failures, "events", self._named, result.events, framed=True) or []
            guarded(self.failures, "outbox", self._publish, list(result.events))
        stream.frames += 1
        self._frames[stream_id] = stream.frames
        self._call(shard, stream_id, SINKS, self.outputs.submit, result, stream.live)  # a file's waits for room

    def _call(self, shard: int, stream_id: str, name: str, method, *args):
        """`guarded` method(*args) of the stage `name` (or `SINKS`), noted as the call worker `shard` is in
        (`give_up_hung`)."""
        self._calls[shard] = (stream_id, name, time.monotonic())
        try:
            return guarded(self.failures, name, method, *args)
        finally:
            self._calls[shard] = None

    def _restage(self, streams: dict[str, _Stream], change: Restage) -> dict[str, str]:
        """The streams whose stages `change` could not change, with why."""
        failed: dict[str, str] = {}
        for stream_id, stream in streams.items():
            try:
                changed = change(stream_id, stream.stages, stream.last)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the user's plugin: the stream goes on with its stages
                self.failures.add("reconfigure")
                log.exception("the stages of stream '%s' could not be changed; it keeps them", stream_id)
                failed[stream_id] = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
                continue
            stream.stages, events = changed
            events = guarded(self.failures, "events", self._named, events, framed=False) or []
            if events:
                guarded(self.failures, "outbox", self._publish, events)
                self.outputs.events(stream_id, events)
        return failed

    def _finish(self, shard: int, streams: dict[str, _Stream], stream_id: str) -> None:
        stream = streams.pop(stream_id, None)
        if stream is None:
            return
        events: list[Event] = []
        for stage in stream.stages:
            events.extend(self._call(shard, stream_id, stage.name, stage.end, stream.last) or [])
        events = guarded(self.failures, "events", self._named, events, framed=False) or []
        if events:
            guarded(self.failures, "outbox", self._publish, events)
            self.outputs.events(stream_id, events)
        self.outputs.end_stream(stream_id, then=self._on_finished)

    def _named(self, events: list[Event], framed: bool) -> list[Event]:
        """`events` with their class names, the instance and, for a frame's events (framed), the files the frame
        sinks will write for them (events that belong to no frame get no snapshot or clip)."""
        named = []
        for event in events:
            files = self.outputs.files_for(event) if framed else {}
            name = None if event.class_id < 0 else class_name(self.class_names, event.class_id)
            named.append(replace(event, class_name=name, snapshot=files.get("snapshot"), clip=files.get("clip"),
                                 instance=self.instance))
        return named
