"""A frame sink's queue when the sink falls behind a live camera (`overflow: drop_oldest`), and a sink or stage
whose call raises what `Exception` does not cover."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipeline.config.outputs import FrameSinkOptions, JsonlOutput
from pipeline.errors import PipelineError
from pipeline.runtime.outputs import Failures, OutputSinks, guarded
from pipeline.testing import RecordingSink
from pipeline.types import Detections, Frame, FrameResult
from tests.support.waiting import wait_until


class HeldSink(RecordingSink):
    """Holds its first frame until `release` is set; `busy` says it took it."""

    def __init__(self):
        super().__init__("held")
        self.busy, self.release = threading.Event(), threading.Event()

    def on_frame(self, result: FrameResult) -> None:
        if result.frame.seq == 0:
            self.busy.set()
            self.release.wait(10)
        super().on_frame(result)


def frame(seq: int, alert: bool = False) -> FrameResult:
    image = np.zeros((48, 64, 3), np.uint8)
    result = FrameResult(Frame("cam-1", seq, seq * 10**8, seq * 10**8, image, 64, 48), Detections.empty(), run_id="run")
    if alert:  # its event names the snapshot the media sink will make of this very frame
        result.events.append(result.moment.event("loiter", "alert", 5, 0, {"snapshot": True}))
    return result


def test_a_full_queue_drops_the_oldest_live_frame_without_events_before_any_with_events():
    sink = HeldSink()
    outputs = OutputSinks([(sink, FrameSinkOptions(queue_size=2))], Failures())
    outputs.open()
    outputs.submit(frame(0), live=True)
    assert sink.busy.wait(10)  # the sink holds frame 0; frames 1 and 2 fill its queue
    for result in (frame(1, alert=True), frame(2), frame(3)):
        outputs.submit(result, live=True)
    sink.release.set()
    assert outputs.finish(10)
    assert sink.seqs["cam-1"] == [0, 1, 3]  # 2 made room for 3; 1 carries an event and keeps its picture
    assert outputs.stats()["held"]["dropped"] == {"cam-1": 1}


def test_when_every_waiting_frame_has_events_the_oldest_gives_up_its_picture_but_not_its_events():
    sink = HeldSink()  # a slow sink must not hold the cameras back, even on a scene with events on every frame
    outputs = OutputSinks([(sink, FrameSinkOptions(queue_size=2))], Failures())
    outputs.open()
    outputs.submit(frame(0), live=True)
    assert sink.busy.wait(10)
    for seq in (1, 2, 3):
        outputs.submit(frame(seq, alert=True), live=True)
    sink.release.set()
    assert outputs.finish(10)
    assert sink.seqs["cam-1"] == [0, 2, 3]
    assert [event.ts_ns for event in sink.events["cam-1"]] == [10**8, 2 * 10**8, 3 * 10**8]  # 1's event too
    assert outputs.stats()["held"]["dropped"] == {"cam-1": 1}


def test_a_cancelled_error_from_a_plugin_is_counted_like_any_failure():
    failures = Failures()

    def cancelled():
        raise asyncio.CancelledError  # a BaseException: a plugin's cancelled asyncio call lets it out

    assert guarded(failures, "plugin", cancelled) is None and failures.counts() == {"plugin": 1}


def test_a_sink_taken_out_that_drains_slowly_is_closed_once_drained_and_not_opened_twice_meanwhile():
    sink, options = HeldSink(), FrameSinkOptions(queue_size=8)
    outputs = OutputSinks([(sink, options)], Failures())
    outputs.open()
    for seq in range(3):
        outputs.submit(frame(seq), live=False)
    assert sink.busy.wait(10)
    assert outputs.remove(options, timeout=0) is False  # still delivering frames 0 to 2
    assert outputs.draining(options) and not sink.closed  # a reload adding it again now is refused
    sink.release.set()
    assert sink.wait_for(lambda s: s.closed, 10) and sink.seqs["cam-1"] == [0, 1, 2]  # delivered, then closed by
    # its own thread, which then ends (it is draining until then: a moment after the close)
    assert wait_until(lambda: not outputs.draining(options), timeout=10)


def test_a_sink_added_where_one_taken_out_still_writes_is_refused_and_closed_whatever_its_other_options():
    held, path = HeldSink(), "/tmp/never-written.jsonl"
    first = JsonlOutput(type="jsonl", path=path, queue_size=8)
    outputs = OutputSinks([(held, first)], Failures())
    outputs.open()
    outputs.submit(frame(0), live=False)
    assert held.busy.wait(10)
    assert outputs.remove(first, timeout=0) is False
    again = RecordingSink("again")
    with pytest.raises(PipelineError, match="still delivers"):
        same_file = JsonlOutput(type="jsonl", path="/tmp/../tmp/never-written.jsonl", queue_size=64)  # written so
        outputs.add(again, same_file)
    assert again.closed
    held.release.set()
    assert held.wait_for(lambda s: s.closed, 10)
    assert wait_until(lambda: not outputs.draining(first), timeout=10)  # its thread ends just after the close
    outputs.add(again, JsonlOutput(type="jsonl", path=path, queue_size=64))  # once it is done
    assert outputs.finish(10)
