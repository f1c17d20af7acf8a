"""Inference threads: take batches from the aligned buffer, run the detector, hand each frame's result on.

`detector.workers` threads may detect at once (host engines), and with a GPU engine one thread keeps the
next batch queued on the GPU while it hands the last one on (`detector.queue_next`). Each stream's frames
reach the stages in the order they were taken, and a stream's end after its last frame; a batch done before an
earlier one that carries one of its streams is parked, not waited for: its thread takes the next batch, and the
thread that hands the earlier one on hands it on too. So a priority camera's batch never waits for a default
batch still being detected, and no worker sits idle waiting for its turn. A batch the detector fails on is
logged, counted and skipped: one bad batch never stops detection. A detector that fails every batch is logged
once with its error, then once every `FAILURE_LOG_S` with a count, and once more when it works again.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.align.buffer import AlignedBuffer
from pipeline.detect.detector import Detector
from pipeline.runtime.telemetry import Telemetry
from pipeline.types import Detections, Frame, FrameBatch

log = logging.getLogger(__name__)

TAKE_TIMEOUT_S = 0.05
"""How long a thread waits for a batch before it looks at its stop event again."""


class Inference:
    """on_batch(frames, detections, bounds) gets every detected batch (detections sorted by frame,
    frame i's rows from bounds[i] to bounds[i + 1]; splitting them per frame is left to the receiver, off
    this thread), on_ended(stream_id) every stream whose last frame was handed on; both from the
    inference threads, one call at a time, each stream's frames in buffer order. The threads end once every
    stream has ended and been drained and `finish_when()` agrees (or when abandoned). telemetry: where each
    batch's frame ages, detector time and size are observed."""

    def __init__(self, buffer: AlignedBuffer, detector: Detector,
                 on_batch: Callable[[list[Frame], Detections, np.ndarray], None],
                 on_ended: Callable[[str], None], finish_when: Callable[[], bool] = lambda: True, *,
                 telemetry: Telemetry):
        self.buffer = buffer
        self.telemetry = telemetry
        self._finish_when = finish_when
        self.detector = detector
        self._on_batch = on_batch
        self._on_ended = on_ended
        self._abandon = threading.Event()
        self._take_lock = threading.Lock()
        self._state = threading.Condition()  # the two dicts below; held briefly, never across a call out
        self._hand_lock = threading.Lock()  # one call of on_batch / on_ended at a time
        self._next_ticket = 0
        self._unfinished: dict[int, frozenset[str]] = {}  # taken, not handed on yet: ticket -> its streams, in order
        self._parked: dict[int, tuple] = {}  # detected, waiting for an earlier batch of one of its streams
        self.batches = self.frames = self.detections = self.failed_batches = 0
        self.infer_s = 0.0
        self.failures = DetectorFailures()
        self._threads = [threading.Thread(target=self._loop, name=f"infer:{i}", daemon=True)
                         for i in range(detector.workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def abandon(self) -> None:
        """Stop taking batches (frames still buffered are not detected) and hand on no more detected frames: a
        batch in flight is dropped, only the streams' ends go on (a parked one once the batch it waited for is
        done). (Handed on out of turn, a batch's frames could otherwise reach the stages after the end of their
        stream that a later batch carried.)"""
        self._abandon.set()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(max(0.0, deadline - time.monotonic()))
        return not self.alive()

    def _loop(self) -> None:
        """Until every stream has ended and every frame was taken (or abandoned).

        With a detector that queues (`detector.queue_next`: a GPU engine), a batch ready when the one before is
        still on the GPU is queued behind it before that one is handed on: the GPU runs it while this thread
        hands on and takes the next. One batch in flight is held, at most; with nothing ready it is finished at
        once, so no batch waits for a later one."""
        in_flight: _Taken | None = None
        try:
            while not self._abandon.is_set():
                with self._state:  # parked results are bounded: a stalled batch holds the others back
                    while in_flight is None and self._parked_full() and not self._abandon.is_set():
                        self._state.wait(TAKE_TIMEOUT_S)
                    full = self._parked_full()
                if in_flight is not None and full:  # never wait holding a batch: the parked may wait for it
                    held, in_flight = in_flight, None
                    self._finish(held)
                    continue
                with self._take_lock:
                    batch = self.buffer.next_batch(timeout=0 if in_flight is not None else TAKE_TIMEOUT_S)
                    finished = batch is None and self.buffer.finished
                    done = finished and self._finish_when()
                    ended = self.buffer.take_ended()
                    ticket = self._register(batch, ended) if batch is not None or ended else -1
                if batch is None and not ended:
                    if in_flight is None and done:
                        return
                    held, in_flight = in_flight, None
                    self._finish(held)
                    if held is None and finished:  # every stream has ended (or there is none yet): a finished
                        self.buffer.wait(TAKE_TIMEOUT_S)  # buffer answers at once, so wait for a camera to come
                    continue
                taken = self._start(ticket, batch, ended)
                held, in_flight = in_flight, taken
                if held is not None:
                    self._finish(held)
                    taken.t0 = max(taken.t0, held.done_at)  # the GPU starts this one once that one is done
                if not (self.detector.queue_next and taken.pending is not None):
                    in_flight = None
                    self._finish(taken)
                if done:
                    return
        finally:
            self._finish(in_flight)  # abandoned (or a receiver failed): its streams' ends still go on
            self._hand_on_ready()

    def _parked_full(self) -> bool:
        return len(self._parked) >= len(self._threads)

    def _start(self, ticket: int, batch: FrameBatch | None, ended: list[str]) -> _Taken:
        taken = _Taken(ticket, batch, ended, time.perf_counter())
        if batch is not None:
            try:  # whatever fails here, the ticket is still finished (the batches of its streams wait for it)
                self.telemetry.batch_taken(batch)
                taken.pending = self.detector.submit(batch)
            except Exception:  # noqa: BLE001 - isolation boundary: one bad batch must not stop detection
                self.failures.failed(batch)
        return taken

    def _finish(self, taken: _Taken | None) -> None:
        """Wait for a taken batch's detections and hand them on in its turn (nothing for None)."""
        if taken is None:
            return
        detections = None
        try:
            detections = taken.pending() if taken.pending is not None else None
        except Exception:  # noqa: BLE001 - isolation boundary: one bad batch must not stop detection
            self.failures.failed(taken.batch)
        finally:
            taken.done_at = time.perf_counter()
            self._hand_on(taken.ticket, taken.batch, detections, taken.ended, taken.done_at - taken.t0)

    def _register(self, batch: FrameBatch | None, ended: list[str]) -> int:
        """A take's turn among those of its streams (the caller holds `_take_lock`: turns follow the takes)."""
        streams = frozenset(ended).union(f.stream_id for f in batch.frames) if batch is not None else frozenset(ended)
        with self._state:
            ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
            self._unfinished[ticket] = streams
        return ticket

    def _hand_on(self, ticket: int, batch: FrameBatch | None, detections: Detections | None, ended: list[str],
                 infer_s: float) -> None:
        """Hand a batch's results on, with every parked one that can go now; park it while an earlier batch of
        one of its streams has not gone on (keeps each stream's frame order without waiting)."""
        with self._state:
            self._parked[ticket] = (batch, detections, ended, infer_s)
        self._hand_on_ready()

    def _hand_on_ready(self) -> None:
        """Hand on every parked batch that can go now, in turn; a receiver's error is raised once they all went."""
        failure: BaseException | None = None
        while (turn := self._next_to_hand_on()) is not None:
            batch, detections, ended, infer_s = turn[1]
            try:
                with self._hand_lock:
                    if batch is not None and not self._abandon.is_set():
                        self._hand_on_batch(batch, detections, infer_s)
                    for stream_id in ended:
                        self._on_ended(stream_id)
            except BaseException as exc:  # noqa: BLE001 - the batches it unblocked still go on; raised below
                failure = failure or exc
            finally:
                with self._state:
                    del self._unfinished[turn[0]]
        if failure is not None:
            raise failure

    def _next_to_hand_on(self) -> tuple[int, tuple] | None:
        """The first parked batch that no earlier unfinished one (being handed on included) shares a stream with
        (any parked one once abandoned), taken out of `_parked`; it stays unfinished until it has gone on."""
        with self._state:
            blocked: set[str] = set()
            for turn, streams in self._unfinished.items():
                if turn in self._parked and not (blocked & streams and not self._abandon.is_set()):
                    self._state.notify_all()  # a thread waiting for room to park may take again
                    return turn, self._parked.pop(turn)
                blocked |= streams
        return None

    def _hand_on_batch(self, batch: FrameBatch, detections: Detections | None, infer_s: float) -> None:
        self.infer_s += infer_s
        if detections is None:
            self.failed_batches += 1
            return
        self.failures.succeeded()
        self.batches += 1
        self.frames += len(batch)
        self.detections += len(detections)
        self.telemetry.batch_detected(batch, infer_s)
        by_row = detections[np.argsort(detections.frame_idx, kind="stable")]
        bounds = np.searchsorted(by_row.frame_idx, np.arange(len(batch) + 1))
        self._on_batch(batch.frames, by_row, bounds)


@dataclass
class _Taken:
    """What one take from the buffer gave: its turn, the batch (None when only streams' ends), the streams that
    ended, when its detection began (submitted, or the batch queued before it done), the call that waits for
    its detections (None: no batch, or it failed) and when they came."""

    ticket: int
    batch: FrameBatch | None
    ended: list[str]
    t0: float
    pending: Callable[[], Detections] | None = None
    done_at: float = 0.0


FAILURE_LOG_S = 10.0
"""While the detector fails, a line in the log at most this often, not one per batch; a detector that failed a
batch this recently, with none through since, counts as failing (`DetectorFailures.failing`)."""


class DetectorFailures:
    """The detector's failed batches: whether it is `failing`, and the log of them: a failure's traceback, then at
    most one line every `FAILURE_LOG_S` with the count since the last line (a batch through ends a run of
    failures with such a line when one is due, or when the run lasted that long). `failed` is called inside the
    handler of the batch's exception."""

    def __init__(self):
        self.since: float | None = None  # monotonic: the first of the failures since a batch last went through
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = float("-inf")

    def failing(self) -> bool:
        """A batch failed within `FAILURE_LOG_S` and none went through since."""
        return self.since is not None and time.monotonic() - self._last < FAILURE_LOG_S

    def failed(self, batch: FrameBatch) -> None:
        with self._lock:
            now = self._last = time.monotonic()
            self.since = now if self.since is None else self.since
            self._unlogged += 1
            if now - self._logged_at < FAILURE_LOG_S:
                return
            count, started, self._unlogged, self._logged_at = self._unlogged, self.since, 0, now
        if count == 1:
            log.exception("batch of %d frames from lane '%s' failed in the detector; skipped", len(batch), batch.lane)
        else:
            log.error("the detector failed %d batches since the last report (failing for %.0f s); skipped: %s",
                      count, now - started, sys.exc_info()[1])

    def succeeded(self) -> None:
        if self.since is None:
            return
        with self._lock:
            now, started, self.since = time.monotonic(), self.since, None
            if started is None or (now - started < FAILURE_LOG_S and now - self._logged_at < FAILURE_LOG_S):
                return  # failing now and then: counted into the next line
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning("the detector works again after failing for %.1f s (%d failed batches since the last report)",
                    now - started, count)
