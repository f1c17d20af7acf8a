"""A sink that hangs (a database that stopped answering) holds back only itself: live cameras' frames
keep reaching the tracker and the other sinks; files wait for it and lose nothing."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from pipeline.config.outputs import FrameSinkOptions
from pipeline.errors import SinkError
from pipeline.runtime import outputs
from pipeline.runtime.runner import PipelineRunner
from pipeline.testing import HangingSink, RecordingSink
from tests.component.conftest import fake_config
from tests.support.waiting import inference_waits_for, wait_until


def test_a_hanging_sink_drops_live_frames_for_itself_only_while_the_stages_go_on(tmp_path, running):
    hanging, healthy = HangingSink(), RecordingSink()
    cameras = [{"id": f"cam-{i}", "url": f"fake://cam-{i}?fps=50", "ring_size": 16} for i in range(2)]
    marks = [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 3}, "streams": ["cam-0"]}]
    runner = PipelineRunner(fake_config(tmp_path, cameras, stages=marks), sinks=[hanging, healthy])
    run = running(runner)
    assert healthy.wait_for(lambda s: min(len(s.seqs["cam-0"]), len(s.seqs["cam-1"])) >= 10, timeout=20)
    queue = 256  # the default queue of a sink given to the runner
    assert healthy.wait_for(lambda s: min(len(s.seqs["cam-0"]), len(s.seqs["cam-1"])) >= queue + 100, timeout=60)
    hanging_now = runner.snapshot().sinks["hanging"]
    assert sum(hanging_now["dropped"].values()) > 0
    hanging.release()
    snap = run.stop()
    for stream_id in ("cam-0", "cam-1"):
        stream = snap.streams[stream_id]
        seqs = healthy.seqs[stream_id]
        assert seqs == list(range(len(seqs)))  # the healthy sink and the stages missed nothing
        assert stream["staged"] == len(seqs) and stream["dropped_overflow"] == stream["dropped_age"] == 0
        assert stream["dropped_sinks"] == snap.sinks["hanging"]["dropped"][stream_id] > 0
    assert hanging.calls == snap.frames_detected - sum(snap.sinks["hanging"]["dropped"].values())
    # the frames it dropped were frames, not events: every mark reached it, with its frame or alone
    assert hanging.events == snap.events == len(healthy.events["cam-0"]) > 0


def test_a_removed_cameras_drop_counts_go_with_it_and_the_others_stay(tmp_path, running):
    hanging, healthy = HangingSink(), RecordingSink()
    cameras = [{"id": f"cam-{i}", "url": f"fake://cam-{i}?fps=50", "ring_size": 16} for i in range(2)]
    runner = PipelineRunner(fake_config(tmp_path, cameras), sinks=[hanging, healthy])
    run = running(runner)
    assert healthy.wait_for(lambda s: min(len(s.seqs["cam-0"]), len(s.seqs["cam-1"])) >= 256 + 100, timeout=60)
    assert set(runner.snapshot().sinks["hanging"]["dropped"]) == {"cam-0", "cam-1"}
    hanging.release()
    assert runner.remove_stream("cam-1")
    assert set(runner.snapshot().sinks["hanging"]["dropped"]) == {"cam-0"}  # what /metrics serves per stream
    assert runner.table.pause("cam-0")
    assert set(runner.snapshot().sinks["hanging"]["dropped"]) == {"cam-0"}  # paused: still the camera's counts
    assert runner.remove_stream("cam-0")
    assert runner.snapshot().sinks["hanging"]["dropped"] == {}  # then removed: gone
    run.stop()


def test_a_file_waits_for_a_slow_sink_and_loses_no_frame(tmp_path, running):
    hanging, healthy = HangingSink(), RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "clip", "url": "fake://clip?frames=400&live=0"}]),
                            sinks=[hanging, healthy])
    run = running(runner)
    assert healthy.wait_for(lambda s: len(s.seqs["clip"]) >= 256, timeout=20)
    stalled_at = len(healthy.seqs["clip"])
    assert stalled_at < 400 and runner.snapshot().sinks["hanging"]["dropped"] == {}  # it waits instead
    hanging.release()
    assert healthy.wait_for(lambda s: "clip" in s.ended, timeout=20)
    snap = run.stop()
    assert healthy.seqs["clip"] == list(range(400)) and hanging.calls == 400
    assert snap.streams["clip"]["dropped_sinks"] == 0


@pytest.mark.fault
def test_a_sink_hung_at_shutdown_does_not_keep_the_others_from_closing(tmp_path):
    hanging, healthy = HangingSink(), RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "cam", "url": "fake://cam?fps=50"}]), sinks=[hanging, healthy])
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert healthy.wait_for(lambda s: len(s.seqs["cam"]) >= 20, timeout=20)
    runner.request_stop()
    runner.request_stop()  # again: do not wait for the hung sink's backlog
    thread.join(60)
    assert not thread.is_alive() and healthy.closed and healthy.ended == ["cam"]
    hanging.release()


class _LosesRowsAtClose(RecordingSink):
    def close(self) -> None:
        super().close()
        raise SinkError("store: 62 rows could not be stored before close (database unreachable for 30 s)")


def test_a_sink_that_fails_to_close_at_shutdown_is_logged_as_such_not_as_one_that_keeps_running(tmp_path, caplog):
    """Before, the shutdown logged "'store' failed (1 failures so far); it keeps running" with a traceback."""
    sink = _LosesRowsAtClose("store")
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "cam", "url": "fake://cam?fps=50"}]), sinks=[sink])
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 5, timeout=20)
    runner.request_stop()
    thread.join(60)
    [record] = [r for r in caplog.records if "store" in r.getMessage() and r.levelno >= logging.ERROR]
    assert record.getMessage() == ("sink 'store' did not close cleanly: store: 62 rows could not be stored before "
                                   "close (database unreachable for 30 s)")
    assert record.exc_info is None and sink.closed


def test_a_sink_taken_out_that_fails_to_close_is_not_said_to_have_delivered_what_it_had(caplog):
    """Before, "did not close cleanly: 62 rows could not be stored" was followed by "(taken out) delivered what
    it had queued and is closed"."""
    caplog.set_level(logging.INFO, logger="pipeline.runtime.outputs")
    sink = _LosesRowsAtClose("store")
    queue = outputs.SinkQueue(sink, FrameSinkOptions(), outputs.Failures())
    queue.start()
    queue.retire()
    assert queue.finish(deadline=time.monotonic() + 10)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.runtime.outputs"]
    assert said == ["sink 'store' did not close cleanly: store: 62 rows could not be stored before close "
                    "(database unreachable for 30 s)"]


class _SlowToClose(RecordingSink):
    def __init__(self, name: str):
        super().__init__(name)
        self.gate = threading.Event()

    def close(self) -> None:
        self.gate.wait(30)
        super().close()


def test_a_sink_still_closing_with_nothing_queued_is_not_said_to_have_items_to_deliver(monkeypatch, caplog):
    """Before: "sink 'store' still busy with 0 items queued; it closes when they are delivered"."""
    monkeypatch.setattr(outputs, "CLOSE_WAIT_S", 0.1)
    sink = _SlowToClose("store")
    queue = outputs.SinkQueue(sink, FrameSinkOptions(), outputs.Failures())
    queue.start()
    assert not queue.finish(deadline=0.0)
    sink.gate.set()
    [record] = [r for r in caplog.records if r.name == "pipeline.runtime.outputs"]
    assert record.getMessage().startswith("sink 'store' is still closing (nothing is queued for it here")
    assert wait_until(lambda: sink.closed, timeout=10)


class _ClosingUntilReleased(RecordingSink):
    """A sink whose close waits for a database that stays down (until `release`)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.closing, self._released = threading.Event(), threading.Event()

    def close(self) -> None:
        self.closing.set()
        self._released.wait(120)
        super().close()

    def release(self) -> None:
        self._released.set()


def test_a_second_stop_does_not_wait_the_whole_drain_for_a_sink_still_closing(tmp_path, monkeypatch):
    """Before, a second SIGTERM while a PostgreSQL sink waited for its database still waited the 30 s."""
    monkeypatch.setattr(outputs, "CLOSE_WAIT_S", 0.2)
    sink = _ClosingUntilReleased("store")
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "cam", "url": "fake://cam?fps=50"}]), sinks=[sink])
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 5, timeout=20)
        runner.request_stop()
        assert sink.closing.wait(20)
        runner.request_stop()  # again: stop now
        thread.join(25)  # the drain's own deadline is 30 s away: a run that returns has not waited for it
        assert not thread.is_alive() and not sink.closed  # it returned with the sink still closing
    finally:
        sink.release()
        thread.join(60)


class _NoPictures(RecordingSink):
    """A sink that never reads pictures, and says so; records whether a frame came with one."""

    def __init__(self):
        super().__init__("no-pictures")
        self.with_picture = 0

    def needs_picture(self, result) -> bool:
        return False

    def on_frame(self, result) -> None:
        self.with_picture += result.frame.image is not None
        super().on_frame(result)


class _Pictures(_NoPictures):
    def needs_picture(self, result) -> bool:
        return True


def test_a_sink_that_needs_no_picture_is_queued_frames_without_one_and_the_others_keep_theirs(tmp_path, running):
    blind, seeing = _NoPictures(), _Pictures()
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "clip", "url": "fake://clip?frames=60&live=0"}]),
                            sinks=[blind, seeing])
    run = running(runner)
    assert seeing.wait_for(lambda s: "clip" in s.ended, timeout=20) and blind.wait_for(lambda s: "clip" in s.ended, 20)
    run.stop()
    assert blind.seqs["clip"] == seeing.seqs["clip"] == list(range(60))  # every frame, in order, to both
    assert blind.with_picture == 0 and seeing.with_picture == 60


@pytest.mark.fault
def test_a_sink_hung_while_a_file_waits_for_it_holds_up_a_first_stop_only_so_long(tmp_path, caplog):
    """A file's frames wait for room in every sink's queue: with one sink hung, its stage worker waited for good,
    inference waited for the worker, and one stop (an orchestrator's SIGTERM) never ended the run."""
    hanging, healthy = HangingSink(), RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [{"id": "clip", "url": "fake://clip?frames=100000&live=0"}]),
                            sinks=[hanging, healthy])
    runner.drain_s = 3.0  # how long a stop waits for a hung stage or sink (and the others to drain); 60 s by default
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert healthy.wait_for(lambda s: len(s.seqs["clip"]) >= 256, timeout=20)  # the hung sink's queue is full
        assert wait_until(lambda: inference_waits_for(runner.parts.stages._put_to), timeout=20)  # all held up
        runner.request_stop()  # once
        thread.join(20)
        assert not thread.is_alive() and healthy.closed
        assert healthy.seqs["clip"] == list(range(len(healthy.seqs["clip"])))
        assert "the sinks (one takes no more frames) of stream 'clip' has not returned" in caplog.text
    finally:
        hanging.release()
        thread.join(30)
