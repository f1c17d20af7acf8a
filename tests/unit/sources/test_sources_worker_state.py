"""The worker's state machine, declared as data."""
from __future__ import annotations

from pipeline.config.models import StreamConfig
from pipeline.sources.worker import TRANSITIONS, StreamWorker, WorkerState


class NullSink:
    def put(self, frame, timeout):
        return True

    def end_stream(self, stream_id):
        pass


def test_final_states_have_no_way_out_and_every_state_is_declared():
    assert set(TRANSITIONS) == set(WorkerState)
    for final in (WorkerState.FINISHED, WorkerState.STOPPED, WorkerState.FAILED):
        assert TRANSITIONS[final] == frozenset()
    for state, targets in TRANSITIONS.items():
        if targets:
            assert WorkerState.STOPPED in targets or state is WorkerState.RECONNECTING


def test_a_worker_stopped_before_start_is_stopped_and_joins_at_once():
    worker = StreamWorker(StreamConfig(id="cam-1", url="rtsp://127.0.0.1:9/x"), NullSink())
    assert worker.state is WorkerState.NEW
    worker.stop()
    assert worker.state is WorkerState.STOPPED
    assert worker.join(timeout=0.1)


class _FakeDecoder:
    def __init__(self, reusable: bool):
        self.reusable = reusable
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_decoder_shelf_hands_a_reusable_decoder_to_the_next_pass_of_the_same_stream():
    from pipeline.sources.pyav import DecoderShelf

    shelf = DecoderShelf()
    first = shelf.take(("h264", 640, 480), lambda: _FakeDecoder(reusable=True))
    assert shelf.keep(first)
    assert shelf.take(("h264", 640, 480), lambda: _FakeDecoder(reusable=True)) is first and not first.closed
    assert shelf.keep(first)
    other = shelf.take(("h264", 1280, 720), lambda: _FakeDecoder(reusable=True))  # another size: a new one
    assert other is not first and first.closed
    cpu = _FakeDecoder(reusable=False)
    assert not shelf.keep(cpu) and not cpu.closed  # the reader closes what the shelf refuses
    assert shelf.keep(other)
    shelf.close()
    assert other.closed
