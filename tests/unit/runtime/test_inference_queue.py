"""With a detector that queues (a GPU engine's `submit` returns before the batch is done), the inference thread
queues the next ready batch before it takes the one before's detections, hands results on in order, never holds
a batch waiting for a later one, and still skips a batch whose detection fails. With two workers, a priority
batch is not held back behind a default batch still being detected."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from pipeline.align import AlignedBuffer
from pipeline.config.models import LaneConfig, StreamConfig
from pipeline.runtime.inference import Inference
from pipeline.types import Detections, Frame

IMAGE = np.zeros((4, 4, 3), np.uint8)


class _Telemetry:
    def batch_taken(self, batch) -> None:
        pass

    def batch_detected(self, batch, infer_s) -> None:
        pass


class _QueuingDetector:
    """Logs when each batch is submitted and when its detections are taken; `fail` seqs raise when taken."""

    workers = 1

    def __init__(self, log: list, queue_next: bool = True, fail: range = range(0)):
        self.log, self.queue_next, self.fail = log, queue_next, fail

    def submit(self, batch):
        seqs = [f.seq for f in batch.frames]
        self.log.append(("submit", seqs))

        def result() -> Detections:
            self.log.append(("result", seqs))
            if set(self.fail) & set(seqs):
                raise RuntimeError("the engine failed on this batch")
            return Detections.empty()

        return result


def _run(detector, frames: int, end: bool = True, start: bool = True):
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=2, max_wait_ms=1000)],
                           [StreamConfig(id="a", url="/clips/a.mp4", ring_size=16)])
    for seq in range(frames):
        buffer.put(Frame("a", seq, seq * 40_000_000, 0, IMAGE, 4, 4), 1.0)
    if end:
        buffer.end_stream("a")
    handed = threading.Event()

    def on_batch(batch_frames, detections, bounds) -> None:
        detector.log.append(("handed", [f.seq for f in batch_frames]))
        handed.set()

    inference = Inference(buffer, detector, on_batch, lambda stream_id: detector.log.append(("end", stream_id)),
                          telemetry=_Telemetry())
    if start:
        inference.start()
    return inference, buffer, handed


def test_the_next_ready_batch_is_queued_before_the_one_before_is_handed_on():
    log: list = []
    inference, _, _ = _run(_QueuingDetector(log), 6)
    assert inference.join(10)
    assert log == [("submit", [0, 1]), ("submit", [2, 3]), ("result", [0, 1]), ("handed", [0, 1]),
                   ("submit", [4, 5]), ("result", [2, 3]), ("handed", [2, 3]),
                   ("result", [4, 5]), ("handed", [4, 5]), ("end", "a")]


def test_without_queue_next_each_batch_is_done_before_the_next_is_submitted():
    log: list = []
    inference, _, _ = _run(_QueuingDetector(log, queue_next=False), 4)
    assert inference.join(10)
    assert log == [("submit", [0, 1]), ("result", [0, 1]), ("handed", [0, 1]),
                   ("submit", [2, 3]), ("result", [2, 3]), ("handed", [2, 3]), ("end", "a")]


def test_a_batch_with_nothing_ready_behind_it_is_handed_on_at_once():
    log: list = []
    inference, buffer, handed = _run(_QueuingDetector(log), 2, end=False)
    assert handed.wait(10)  # the stream is still open and no other batch exists
    assert log == [("submit", [0, 1]), ("result", [0, 1]), ("handed", [0, 1])]
    buffer.end_stream("a")
    assert inference.join(10) and log[-1] == ("end", "a")


def test_a_batch_whose_detections_fail_is_skipped_and_the_next_still_goes_on():
    log: list = []
    inference, _, _ = _run(_QueuingDetector(log, fail=range(2, 3)), 6)
    assert inference.join(10)
    assert [entry for entry in log if entry[0] == "handed"] == [("handed", [0, 1]), ("handed", [4, 5])]
    assert inference.failed_batches == 1 and inference.batches == 2 and log[-1] == ("end", "a")


def test_a_detector_failing_batch_after_batch_is_logged_once_with_its_error_not_once_per_batch(caplog):
    log: list = []
    inference, _, _ = _run(_QueuingDetector(log, fail=range(2, 14)), 16)  # six batches fail, then one goes through
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.inference"):
        assert inference.join(10)
    assert inference.failed_batches == 6 and inference.batches == 2
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [("ERROR", True)]
    assert inference.failures.since is None and not inference.failures.failing()  # it went through again


def test_a_batch_that_cannot_be_submitted_is_skipped_while_the_one_in_flight_still_goes_on():
    log: list = []
    detector = _QueuingDetector(log)
    submit = detector.submit

    def failing_submit(batch):
        if batch.frames[0].seq == 2:
            raise RuntimeError("the engine refused this batch")
        return submit(batch)

    detector.submit = failing_submit
    inference, _, _ = _run(detector, 6)
    assert inference.join(10)
    assert [entry for entry in log if entry[0] == "handed"] == [("handed", [0, 1]), ("handed", [4, 5])]
    assert inference.failed_batches == 1 and log[-1] == ("end", "a")


def test_once_abandoned_the_batch_in_flight_is_waited_for_but_not_handed_on():
    log: list = []
    detector = _QueuingDetector(log)
    submit = detector.submit
    inference = None

    def abandoning_submit(batch):
        pending = submit(batch)
        if batch.frames[0].seq == 2:  # a stop while [0, 1] is in flight and [2, 3] was just queued
            inference.abandon()
        return pending

    detector.submit = abandoning_submit
    inference, _, _ = _run(detector, 6, start=False)
    inference.start()
    assert inference.join(10)
    assert ("result", [0, 1]) in log and ("result", [2, 3]) in log  # waited for: their frames may go now
    assert not [entry for entry in log if entry[0] == "handed"] and ("submit", [4, 5]) not in log


def test_with_two_workers_a_priority_batch_goes_on_while_a_default_batch_is_still_detected():
    log: list = []
    submitted, release = threading.Event(), threading.Event()

    class _TwoWorkers:
        workers, queue_next = 2, False

        def submit(self, batch):
            if batch.lane == "default":
                submitted.set()
                return lambda: (release.wait(10), Detections.empty())[1]  # a long default batch
            return Detections.empty

    buffer = AlignedBuffer([LaneConfig(name="priority", priority=10, max_batch=1, max_wait_ms=0),
                            LaneConfig(name="default", max_batch=2, max_wait_ms=0)],
                           [StreamConfig(id="a", url="/clips/a.mp4", ring_size=16),
                            StreamConfig(id="door", url="/clips/door.mp4", lane="priority", ring_size=16)])
    done = threading.Event()

    def on_batch(frames, detections, bounds) -> None:
        log.append(("handed", [f.stream_id for f in frames]))
        if frames[0].stream_id == "door":
            done.set()

    inference = Inference(buffer, _TwoWorkers(), on_batch, lambda stream_id: log.append(("end", stream_id)),
                          telemetry=_Telemetry())
    inference.start()
    try:
        for seq in range(2):
            buffer.put(Frame("a", seq, seq * 40_000_000, 0, IMAGE, 4, 4), 1.0)
        assert submitted.wait(10)  # the default batch is being detected on one worker
        buffer.put(Frame("door", 0, 0, 0, IMAGE, 4, 4), 1.0)
        assert done.wait(10) and log == [("handed", ["door"])]  # not held back behind it
    finally:
        release.set()
        buffer.end_stream("a")
        buffer.end_stream("door")
    assert inference.join(10)
    assert log[:2] == [("handed", ["door"]), ("handed", ["a", "a"])]
    assert sorted(log[2:]) == [("end", "a"), ("end", "door")]


class _TwoQueuingWorkers:
    """Two workers that queue (a set-up the detector itself never builds, `Inference` must still survive it): the
    first batch's `submit` returns only once the other worker has parked as many finished batches as there are
    workers behind it, so its thread comes back holding the batch they wait for."""

    workers, queue_next = 2, True

    def __init__(self):
        self.inference: Inference | None = None

    def submit(self, batch):
        if batch.frames[0].seq == 0:
            deadline = time.monotonic() + 10
            while len(self.inference._parked) < self.workers:  # nothing signals a park: look every millisecond
                assert time.monotonic() < deadline, "the other worker never parked its batches"
                threading.Event().wait(0.001)
        return Detections.empty


def test_a_worker_holding_the_batch_the_parked_ones_wait_for_hands_it_on_instead_of_waiting_for_room():
    log: list = []
    detector = _TwoQueuingWorkers()
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=1, max_wait_ms=0)],
                           [StreamConfig(id="a", url="/clips/a.mp4", ring_size=16)])
    for seq in range(8):
        buffer.put(Frame("a", seq, seq * 40_000_000, 0, IMAGE, 4, 4), 1.0)
    buffer.end_stream("a")
    detector.inference = Inference(buffer, detector, lambda frames, detections, bounds: log.extend(f.seq for f in frames),
                                   lambda stream_id: log.append("end"), telemetry=_Telemetry())
    detector.inference.start()
    assert detector.inference.join(20)
    assert log == [0, 1, 2, 3, 4, 5, 6, 7, "end"]


def test_a_batch_whose_telemetry_fails_is_skipped_and_the_stream_goes_on():
    log: list = []

    class _FailingTelemetry(_Telemetry):
        def batch_taken(self, batch) -> None:
            if batch.frames[0].seq == 0:
                raise ValueError("a histogram rejected the batch")

    detector = _QueuingDetector(log, queue_next=False)
    detector.workers = 2
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=1, max_wait_ms=0)],
                           [StreamConfig(id="a", url="/clips/a.mp4", ring_size=16)])
    for seq in range(6):
        buffer.put(Frame("a", seq, seq * 40_000_000, 0, IMAGE, 4, 4), 1.0)
    buffer.end_stream("a")
    inference = Inference(buffer, detector, lambda frames, detections, bounds: log.append(("handed", frames[0].seq)),
                          lambda stream_id: log.append(("end", stream_id)), telemetry=_FailingTelemetry())
    inference.start()
    assert inference.join(20)
    assert [entry for entry in log if entry[0] in ("handed", "end")] == [("handed", s) for s in range(1, 6)] + [("end", "a")]
    assert inference.failed_batches == 1


def test_with_every_stream_ended_the_inference_thread_waits_instead_of_asking_again_at_once():
    """A service with no camera yet, or whose files have all ended: the buffer is finished, `next_batch` answers at
    once, and the thread asked again in a busy loop (a whole core, idle)."""
    buffer = AlignedBuffer([LaneConfig(name="default")], [])
    asked = []
    next_batch = buffer.next_batch
    buffer.next_batch = lambda timeout: asked.append(timeout) or next_batch(timeout)
    stop = threading.Event()
    inference = Inference(buffer, _QueuingDetector([]), lambda *args: None, lambda stream_id: None,
                          finish_when=stop.is_set, telemetry=_Telemetry())
    inference.start()
    time.sleep(0.5)  # the window over which it is counted: a thread waiting 50 ms a time asks about 10 times
    stop.set()
    assert inference.join(10)
    assert 0 < len(asked) < 50, len(asked)
