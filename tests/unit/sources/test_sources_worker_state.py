"""The worker's state machine, declared as data; its retry schedule for refused streams."""
from __future__ import annotations

import itertools
import random

import pytest

import pipeline.sources.worker as worker_module
import pipeline.testing  # noqa: F401 - fake://
from pipeline.backoff import Backoff
from pipeline.config.models import StreamConfig
from pipeline.errors import SourceError
from pipeline.sources.worker import REFUSED_MAX_S, REFUSED_MIN_S, TRANSITIONS, StreamWorker, WorkerState
from pipeline.testing.source import FakeReader
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



@pytest.mark.parametrize("seed", range(5))
def test_a_refused_camera_is_tried_a_few_times_in_its_first_minute_then_once_or_twice_a_minute(seed):
    now = [0.0]
    backoff = Backoff(REFUSED_MIN_S, REFUSED_MAX_S, rng=random.Random(seed), clock=lambda: now[0])
    tries = [0.0]
    while now[0] < 3600:  # each try is refused at once; the worker waits, then tries again
        now[0] += backoff.next_delay()
        tries.append(now[0])
    assert 4 <= sum(t < 60 for t in tries) <= 7, tries[:10]
    per_minute = [sum(m * 60 <= t < (m + 1) * 60 for t in tries) for m in range(5, 59)]
    assert max(per_minute) <= 2 and min(per_minute) >= 1, per_minute


class _CountingReader(FakeReader):
    """A fake camera whose reader counted what a real one might, including a key the worker does not know,
    and whose close fails."""

    def counters(self) -> dict[str, int]:
        return {"skipped_late": 5, "bytes_dropped": 7}

    def close(self) -> None:
        super().close()
        raise SourceError("the connection broke while closing")


def test_a_pass_keeps_its_reader_counts_when_the_reader_fails_to_close_and_counts_an_unknown_key(monkeypatch):
    url = "fake://cam-1?fps=100&frames=3&live=0"
    monkeypatch.setattr(worker_module, "open_reader", lambda config, *args, **kwargs: _CountingReader(url))
    worker = StreamWorker(StreamConfig(id="cam-1", url=url), CollectingSink())
    worker.start()
    assert worker.join(10)
    stats = worker.stats()
    assert stats["skipped_late"] == 5 and stats["bytes_dropped"] == 7
