"""Each stream's results go on in the order their batches were taken, and a stream's end after its last frame,
without a worker waiting for its turn: a batch done before an earlier one of its streams is parked and handed on
by the thread that hands the earlier one on, while a batch of other streams goes on at once. Abandoned too: once a
stop abandons what is in flight, a batch that finishes after a later batch carried its stream's end hands on
nothing (its frames would otherwise reach the stages after that end and open the stream again)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.runtime.inference import Inference
from pipeline.types import Detections, Frame, FrameBatch


class _Telemetry:
    def batch_detected(self, batch, infer_s) -> None:
        pass


def _inference(calls: list) -> Inference:
    return Inference(None, SimpleNamespace(workers=2), on_batch=lambda frames, detections, bounds:
                     calls.append(("frames", [f.stream_id for f in frames])),
                     on_ended=lambda stream_id: calls.append(("end", stream_id)), telemetry=_Telemetry())


def _batch(stream: str = "cam", lane: str = "default") -> FrameBatch:
    return FrameBatch([Frame(stream, seq, seq * 1000, 0, None, 64, 48) for seq in range(2)], lane)


def test_a_later_batch_done_first_is_parked_so_frames_come_before_their_streams_end():
    calls: list = []
    inference = _inference(calls)
    first, frames = inference._register(_batch(), []), Detections.empty()
    later = inference._register(None, ["cam"])  # taken second, carrying cam's end
    inference._hand_on(later, None, None, ["cam"], 0.0)  # done first: parked, its thread goes on
    assert calls == []
    inference._hand_on(first, _batch(), frames, [], 0.0)  # the earlier one goes on, then the parked one
    assert calls == [("frames", ["cam", "cam"]), ("end", "cam")]


def test_a_batch_of_other_streams_goes_on_before_an_earlier_batch_still_detected():
    calls: list = []
    inference = _inference(calls)
    default = inference._register(_batch("cam"), [])
    priority = inference._register(_batch("door", "priority"), [])
    again = inference._register(_batch("cam"), [])
    inference._hand_on(priority, _batch("door", "priority"), Detections.empty(), [], 0.0)
    inference._hand_on(again, _batch("cam"), Detections.empty(), [], 0.0)  # cam's earlier batch is not done
    assert calls == [("frames", ["door", "door"])]
    inference._hand_on(default, _batch("cam"), Detections.empty(), [], 0.0)
    assert calls == [("frames", ["door", "door"]), ("frames", ["cam", "cam"]), ("frames", ["cam", "cam"])]
    assert inference.batches == 3 and not inference._unfinished and not inference._parked


def test_once_abandoned_a_batch_finishing_after_its_streams_end_hands_on_no_frame():
    calls: list = []
    inference = _inference(calls)
    first = inference._register(_batch(), [])
    later = inference._register(None, ["cam"])
    inference._hand_on(later, None, None, ["cam"], 0.0)  # parked behind the first
    inference.abandon()  # a second stop
    inference._hand_on(first, _batch(), Detections.empty(), [], 0.0)  # the batch taken first, done only now
    assert calls == [("end", "cam")]


def test_a_receiver_failing_on_one_batch_still_lets_the_batches_it_held_back_go_on():
    calls: list = []

    def on_batch(frames, detections, bounds):
        if frames[0].seq == 0:
            raise RuntimeError("a stage queue was closed")
        calls.append(("frames", [f.stream_id for f in frames]))

    inference = Inference(None, SimpleNamespace(workers=2), on_batch=on_batch,
                          on_ended=lambda stream_id: calls.append(("end", stream_id)), telemetry=_Telemetry())
    first = inference._register(_batch(), [])
    later = inference._register(None, ["cam"])
    inference._hand_on(later, None, None, ["cam"], 0.0)
    with pytest.raises(RuntimeError, match="stage queue was closed"):
        inference._hand_on(first, _batch(), Detections.empty(), [], 0.0)
    assert calls == [("end", "cam")] and not inference._parked and not inference._unfinished
