"""The frame sinks, each behind a bounded queue and a thread of its own (`sink:<name>`).

A slow or hung sink (a database that stalls, a full disk) holds back only itself. Its queue holds at
most `queue_size` frames; when it is full, a live camera's frame takes the place of the oldest live
frame waiting that carries no event (`overflow: drop_oldest`, counted per stream). Only when every waiting
live frame carries events does the oldest of them lose its picture and detections; its events still reach
the sink (`on_events`: the media sink still cuts their clips and counts their snapshots as missed). File
frames wait for room (nothing of a file is lost), and so do live frames with `overflow: block`. Stream
start and end markers and events
never wait. A frame goes into the queue of a sink that does not need its picture (`needs_picture`) without
it, so a backlog there keeps no decoded picture alive. A failing callback is isolated, counted and logged;
the sink keeps getting the next items.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any, Callable

from pipeline import plugins
from pipeline.config.fields import same_place
from pipeline.config.outputs import FrameSinkOptions
from pipeline.errors import PipelineError, SinkError
from pipeline.sinks.base import Sink
from pipeline.types import Event, FrameResult

log = logging.getLogger(__name__)

PUT_WAIT_S = 1.0
"""How long a waiting put sleeps before it checks that the sink's thread is still there."""

CLOSE_WAIT_S = 5.0
"""At shutdown, each sink has at least this long to finish what is queued, whatever the others took."""


class Failures:
    """Failures per part name, counted from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str) -> int:
        with self._lock:
            self._counts[name] += 1
            return self._counts[name]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def guarded(failures: Failures, name: str, fn, *args, **kwargs) -> Any:
    """Call `fn(*args)`; an exception is counted under `name` and logged (the 1st, 10th, 100th, every
    1000th), and None returned: the isolation boundary of every stage and sink."""
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - one failing part must not stop the others (a plugin's CancelledError too)
        count = failures.add(name)
        if count in (1, 10, 100) or count % 1000 == 0:
            log.exception("'%s' failed (%d failures so far); it keeps running", name, count)
        return None


def close_guarded(failures: Failures, sink: Sink) -> bool:
    """Close `sink` (the pipeline stops, or it was taken out); True when it closed cleanly. A failure is counted
    and logged, never raised; a typed error says what was lost and why itself: no traceback for it."""
    try:
        sink.close()
        return True
    except (KeyboardInterrupt, SystemExit):
        raise
    except PipelineError as exc:
        failures.add(sink.name)
        log.error("sink '%s' did not close cleanly: %s", sink.name, exc)
    except BaseException:  # noqa: BLE001 - a bug in one sink's close must not keep the others from closing
        failures.add(sink.name)
        log.exception("sink '%s' did not close cleanly", sink.name)
    return False


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


class _Item:
    __slots__ = ("method", "args", "frame_of", "after")

    def __init__(self, method: str, args: tuple, frame_of: str | None = None, after: _Countdown | None = None):
        self.method, self.args, self.frame_of, self.after = method, args, frame_of, after


class SinkQueue:
    """One sink, its queue and its thread."""

    def __init__(self, sink: Sink, options: FrameSinkOptions, failures: Failures):
        self.sink, self.options = sink, options
        self.capacity = options.queue_size
        self.block_live = options.overflow == "block"
        self.dropped: Counter[str] = Counter()  # live frames per stream
        self._failures = failures
        self._items: deque[_Item] = deque()
        self._frames = 0  # frames in `_items`; only they count against the capacity
        self._live = 0  # of which live
        self._cond = threading.Condition()
        self._closed = False
        self.retired = False  # taken out while running: what comes now is not for it
        self._thread = threading.Thread(target=self._run, name=f"sink:{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put_frame(self, result: FrameResult, live: bool) -> None:
        """Queue `sink.on_frame(result)`, making room as the module docstring says."""
        droppable = live and not self.block_live
        with self._cond:
            while self._frames >= self.capacity and not self._closed:
                if droppable and self._live:
                    self._drop_oldest_live_locked()
                    break
                if not self._cond.wait(PUT_WAIT_S) and not self._thread.is_alive():
                    raise SinkError(f"sink '{self.sink.name}': its thread is gone; see the log for the cause")
            self._items.append(_Item("on_frame", (result,), result.frame.stream_id if droppable else None))
            self._frames += 1
            self._live += droppable
            self._cond.notify_all()

    def put(self, method: str, *args, after: _Countdown | None = None) -> None:
        """Queue `sink.<method>(*args)` (a start or end marker, events): never waits. `after` counts down
        once it has run, or at once when the sink was taken out (nothing would run it)."""
        with self._cond:
            if not self.retired:
                self._items.append(_Item(method, args, after=after))
                self._cond.notify_all()
                return
        if after is not None:
            after.done()

    def _drop_oldest_live_locked(self) -> None:
        """Drop the oldest waiting live frame that carries no event; when every one does (their events name
        the snapshots and clips made of them), the oldest gives up its picture and detections, not its events."""
        live = [i for i, item in enumerate(self._items) if item.frame_of is not None]
        i = next((i for i in live if not self._items[i].args[0].events), live[0])
        item = self._items[i]
        self.dropped[item.frame_of] += 1
        self._frames -= 1
        self._live -= 1
        if item.args[0].events:
            self._items[i] = _Item("on_events", (item.frame_of, list(item.args[0].events)))
        else:
            del self._items[i]

    def retire(self) -> None:
        """Taken out while running: what is queued is still delivered (see `finish`), what is put from now
        on only counts down its `after`."""
        with self._cond:
            self.retired = True
        self.close()

    def close(self) -> None:
        """Take no more waiting: queued items are still delivered (see `finish`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def finish(self, deadline: float, abandon: threading.Event | None = None) -> bool:
        """Deliver what is queued and close the sink (its thread does, once it has delivered everything); False
        when that did not finish in time (at least `CLOSE_WAIT_S`, else until `deadline`, monotonic seconds; once
        `abandon` is set, `CLOSE_WAIT_S` more at most): the thread goes on and closes the sink when done (a sink
        taken out while running), unless the process ends."""
        self.close()
        if self._thread.ident is None:  # never opened
            return True
        end = max(time.monotonic() + CLOSE_WAIT_S, deadline)
        while self._thread.is_alive() and (now := time.monotonic()) < end:
            if abandon is not None and abandon.is_set():  # asked again to stop: a last few seconds, not the deadline
                end = min(end, now + CLOSE_WAIT_S)
            self._thread.join(min(0.1, end - now) if abandon is not None else end - now)
        if self._thread.is_alive():
            queued = len(self._items)
            if queued:
                log.warning("sink '%s' still busy with %d items queued; it closes when they are delivered",
                            self.sink.name, queued)
            else:  # nothing left here: the sink itself still works on what it took (a storage writer's backlog)
                log.warning("sink '%s' is still closing (nothing is queued for it here: what it holds itself is "
                            "delivered or given up as its own log says); it finishes by itself", self.sink.name)
            return False
        return True

    def forget(self, stream_id: str) -> None:
        with self._cond:
            self.dropped.pop(stream_id, None)

    def depth(self) -> int:
        return len(self._items)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait(PUT_WAIT_S)
                if not self._items:
                    break
                item = self._items.popleft()
                if item.method == "on_frame":
                    self._frames -= 1
                    self._live -= item.frame_of is not None
                self._cond.notify_all()
            guarded(self._failures, self.sink.name, getattr(self.sink, item.method), *item.args)
            if item.after is not None:
                guarded(self._failures, self.sink.name, item.after.done)
        closed = close_guarded(self._failures, self.sink)  # drained: at shutdown, or taken out
        if self.retired and closed:
            log.info("sink '%s' (taken out) delivered what it had queued and is closed", self.sink.name)


class OutputSinks:
    """Every frame sink of the pipeline; fed by the stage workers, per stream in frame order."""

    def __init__(self, sinks: list[tuple[Sink, FrameSinkOptions]], failures: Failures):
        self.failures = failures
        self._queues = [SinkQueue(sink, options, failures) for sink, options in sinks]  # replaced, never changed
        self._retiring: list[SinkQueue] = []  # taken out, still delivering what they had queued
        self._streams: dict[str, str] = {}  # started and not ended: id -> url
        self._lock = threading.Lock()  # the two above, between the stage workers and a sink added or taken out
        self._taps: tuple[Callable[[FrameResult], None], ...] = ()  # replaced, never changed
        self._finished = False  # `finish` began: a sink added now would never be closed

    def open(self) -> None:
        """Open every sink and start its thread; SinkError when one cannot start (the ones before it
        are running and close as usual, the rest are never opened)."""
        for q in self._queues:
            q.sink.open()
            q.start()

    def add(self, sink: Sink, options: FrameSinkOptions) -> None:
        """A sink added while running (already opened): told of every stream running (`on_stream_joined` where it
        has one, else `on_stream_start`), then fed from the next frame on."""
        if self.draining(options):  # taken out in the same change, and still writing there
            close_guarded(self.failures, sink)
            raise PipelineError(f"sink {sink.name} not added: the one it replaces still delivers what it had "
                                "queued; apply the change again once it is done")
        q = SinkQueue(sink, options, self.failures)
        joined = "on_stream_joined" if hasattr(sink, "on_stream_joined") else "on_stream_start"
        with self._lock:
            if self._finished:
                close_guarded(self.failures, sink)
                raise PipelineError(f"sink {sink.name} not added: the pipeline is stopping")
            for stream_id, url in self._streams.items():
                q.put(joined, stream_id, url)
            q.start()
            self._queues = [*self._queues, q]

    def remove(self, options: FrameSinkOptions, timeout: float = 10.0) -> bool:
        """Stop feeding the sink of `options` (its `sinks:` entry), deliver what it has queued and close it;
        False when that took longer than `timeout`."""
        with self._lock:
            q = next((q for q in self._queues if q.options == options), None)
            if q is None:  # it never opened
                return True
            self._queues = [other for other in self._queues if other is not q]
            q.retire()
        if q.finish(time.monotonic() + timeout):
            return True
        with self._lock:
            self._retiring.append(q)
        return False

    def draining(self, options: FrameSinkOptions) -> bool:
        """A sink of the output `options` writes to was taken out and still delivers what it had queued (opening
        one there now would make two writers of one output)."""
        with self._lock:
            self._retiring = [q for q in self._retiring if q.alive()]
            return any(_output_of(q.options) == _output_of(options) for q in self._retiring)

    def start_stream(self, stream_id: str, url: str) -> None:
        with self._lock:
            self._streams[stream_id] = url
            for q in self._queues:
                q.put("on_stream_start", stream_id, url)

    def submit(self, result: FrameResult, live: bool) -> None:
        for tap in self._taps:
            guarded(self.failures, "tap", tap, result)
        blind = None  # the result without its picture, made once for every sink that reads none
        for q in self._queues:
            needs = guarded(self.failures, q.sink.name, q.sink.needs_picture, result) is not False
            if not needs:
                blind = blind or replace(result, frame=replace(result.frame, image=None))
            guarded(self.failures, q.sink.name, q.put_frame, result if needs else blind, live)

    def add_tap(self, tap: Callable[[FrameResult], None]) -> None:
        """Call `tap(result)` on the stage worker with every result, before the sinks get it: for a look that
        must not queue frames (the console's previews). It must return at once and keep no frame."""
        with self._lock:
            self._taps = (*self._taps, tap)

    def remove_tap(self, tap: Callable[[FrameResult], None]) -> None:
        with self._lock:
            self._taps = tuple(t for t in self._taps if t is not tap)

    def files_for(self, event: Event) -> dict[str, str]:
        """The files the sinks will write for `event`, one of a frame's, by role (`snapshot`, `clip`): what
        the sinks' optional `files_for` say; the first sink to name a role wins."""
        files: dict[str, str] = {}
        for q in self._queues:
            named = getattr(q.sink, "files_for", None)
            if named is not None:
                for role, path in (guarded(self.failures, q.sink.name, named, event) or {}).items():
                    files.setdefault(role, str(path))
        return files

    def events(self, stream_id: str, events: list[Event]) -> None:
        self._each("on_events", stream_id, events)

    def end_stream(self, stream_id: str, then: Callable[[str], None] | None = None) -> None:
        """Queue the stream's end to every sink; `then(stream_id)` runs once all of them have handled it."""
        with self._lock:
            self._streams.pop(stream_id, None)
            queues = self._queues
            countdown = _Countdown(len(queues), lambda: then(stream_id)) if then is not None and queues else None
            for q in queues:
                q.put("on_stream_end", stream_id, after=countdown)
        if then is not None and not queues:
            then(stream_id)

    def close(self) -> None:
        """Stop waiting for room everywhere (a stage worker blocked on a full queue goes on)."""
        for q in self._queues:
            q.close()

    def finish(self, timeout: float = 30.0, abandon: threading.Event | None = None) -> bool:
        """Deliver what every sink has queued and close them; True when all finished in time. Once `abandon` is
        set (a second stop), each sink still closing is waited for `CLOSE_WAIT_S` at most."""
        with self._lock:
            self._finished = True
        self.close()
        deadline = time.monotonic() + timeout
        return all([q.finish(deadline, abandon) for q in self._queues])

    def forget(self, stream_id: str) -> None:
        """A stream removed for good: its drop counts go, as its other per-stream figures do."""
        for q in self._queues:
            q.forget(stream_id)

    def stats(self) -> dict[str, dict]:
        """Per sink: its own counters, queue depth, and the live frames dropped per stream."""
        return {q.sink.name: {**(guarded(self.failures, q.sink.name, q.sink.stats) or {}), "queued": q.depth(),
                              "dropped": dict(q.dropped)} for q in self._queues}

    def _each(self, method: str, *args) -> None:
        for q in self._queues:
            q.put(method, *args)


def _output_of(options: FrameSinkOptions) -> tuple:
    """What a sink writes to: its type and its file or folder as the config's own check compares them (a database's
    DSN), whatever its other options."""
    kind = getattr(options, "type", None)  # None: options made in code, not a `sinks:` entry
    writes = plugins.output(kind).writes if kind is not None else None
    return kind, same_place(getattr(options, writes[0])) if writes else getattr(options, "dsn", options)
