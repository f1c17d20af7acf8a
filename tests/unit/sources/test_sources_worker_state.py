"""The worker's state machine, declared as data."""
from __future__ import annotations

import itertools

import pipeline.testing  # noqa: F401 - fake://
from pipeline.config.models import StreamConfig
from pipeline.sources.worker import TRANSITIONS, StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.waiting import wait_until


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


def test_a_live_stream_without_frames_for_read_timeout_s_shows_stalled_then_running_again():
    sink = CollectingSink()
    config = StreamConfig(id="cam-1", url="fake://cam-1?fps=50&stall_at=10&stall_s=1.5", read_timeout_s=0.2)
    worker = StreamWorker(config, sink)
    seen = []
    worker.start()
    assert wait_until(lambda: seen.append(worker.stats()["state"]) or seen[-1] == "stalled", timeout=10), seen
    assert len(sink.frames) == 10 and worker.state is WorkerState.STALLED
    assert sink.wait_for(20, timeout=10)
    assert worker.state is WorkerState.RUNNING
    worker.stop()
    assert worker.join(5)
    observed = [state for i, state in enumerate(seen) if i == 0 or state != seen[i - 1]]
    assert observed[-2:] == ["running", "stalled"]
    assert all(WorkerState(b) in TRANSITIONS[WorkerState(a)] for a, b in itertools.pairwise(observed))
