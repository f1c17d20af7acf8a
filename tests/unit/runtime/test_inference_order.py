"""Results go on in the order their batches were taken, and a stream's end after its last frame, abandoned too:
once a stop abandons what is in flight, a batch that finishes after a later batch carried its stream's end
hands on nothing (its frames would otherwise reach the stages after that end and open the stream again)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from pipeline.runtime.inference import Inference
from pipeline.types import Detections, Frame, FrameBatch


class _Telemetry:
    def batch_detected(self, batch, infer_s) -> None:
        pass


def _inference(calls: list) -> Inference:
    return Inference(None, SimpleNamespace(workers=2),
                     on_batch=lambda frames, detections, bounds: calls.append(("frames", [f.stream_id for f in frames])),
                     on_ended=lambda stream_id: calls.append(("end", stream_id)), telemetry=_Telemetry())


def _batch() -> FrameBatch:
    return FrameBatch([Frame("cam", seq, seq * 1000, 0, None, 64, 48) for seq in range(2)], "default")


def test_a_later_batch_waits_for_its_turn_so_frames_come_before_their_streams_end():
    calls: list = []
    inference = _inference(calls)
    later = threading.Thread(target=inference._hand_on, args=(1, None, None, ["cam"], 0.0))
    later.start()  # taken second, carrying cam's end: it waits for the batch taken first
    inference._hand_on(0, _batch(), Detections.empty(), [], 0.0)
    later.join(10)
    assert not later.is_alive() and calls == [("frames", ["cam", "cam"]), ("end", "cam")]


def test_once_abandoned_a_batch_finishing_after_its_streams_end_hands_on_no_frame():
    calls: list = []
    inference = _inference(calls)
    later = threading.Thread(target=inference._hand_on, args=(1, None, None, ["cam"], 0.0))
    later.start()
    inference.abandon()  # a second stop: the later batch goes on without waiting for its turn
    later.join(10)
    assert not later.is_alive() and calls == [("end", "cam")]
    inference._hand_on(0, _batch(), Detections.empty(), [], 0.0)  # the batch taken first, done only now
    assert calls == [("end", "cam")]
