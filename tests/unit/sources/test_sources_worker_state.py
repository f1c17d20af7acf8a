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
