"""AlignedBuffer: when a lane's batch goes: full, its deadline, its live frames' age, nothing more to come."""
from __future__ import annotations

import threading
import time

from pipeline.align import AlignedBuffer
from tests.support.aligned import FakeClock, live, file, frame, ids, lane


def test_lane_flushes_as_soon_as_it_holds_max_batch_frames():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=4, max_wait_ms=1000)], [live("a"), live("b")], clock)
    for seq in range(2):
        buf.put(frame("a", seq), 0.1)
    buf.put(frame("b", 0), 0.1)
    assert buf.next_batch(0) is None
    buf.put(frame("b", 1), 0.1)
    batch = buf.next_batch(0)
    assert ids(batch) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert batch.lane == "default" and batch.formed_ns == clock.now


def test_partial_batch_flushes_when_oldest_frame_waited_max_wait():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=30)], [live("a")], clock)
    buf.put(frame("a", 0), 0.1)
    clock.advance_ms(20)
    buf.put(frame("a", 1), 0.1)
    clock.advance_ms(9.9)
    assert buf.next_batch(0) is None
    clock.advance_ms(0.1)
    assert ids(buf.next_batch(0)) == [("a", 0), ("a", 1)]


def test_a_partial_batch_goes_before_its_live_frames_are_too_old_when_max_age_is_below_max_wait():
    """Such a lane dropped every frame of a camera too slow to fill a batch: each aged out while the lane waited."""
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=500, max_age_ms=100)], [live("cam"), file("clip")], clock)
    buf.put(frame("cam", 0), 0.1)
    clock.advance_ms(74.9)
    assert buf.next_batch(0) is None
    clock.advance_ms(0.1)  # a quarter of the age bound is left for the consumer to wake
    assert ids(buf.next_batch(0)) == [("cam", 0)]
    assert buf.stats()["streams"]["cam"]["dropped_age"] == 0
    buf.put(frame("clip", 0), 0.1)  # files are never too old: they wait max_wait_ms
    clock.advance_ms(499.9)
    assert buf.next_batch(0) is None
    clock.advance_ms(0.1)
    assert ids(buf.next_batch(0)) == [("clip", 0)]


def test_a_consumer_waiting_on_the_real_clock_gets_a_slow_cameras_frame_before_it_is_too_old():
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=5000, max_age_ms=400)], [live("cam")])
    buf.put(frame("cam", 0), 0.1)
    assert ids(buf.next_batch(timeout=3)) == [("cam", 0)]  # it wakes after its deadline, never at it
    assert buf.stats()["streams"]["cam"]["dropped_age"] == 0


def test_waiting_consumer_wakes_when_the_deadline_expires():
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=80)], [live("a")])
    buf.put(frame("a", 0), 0.1)
    start = time.monotonic()
    batch = buf.next_batch(timeout=5)
    elapsed = time.monotonic() - start
    assert ids(batch) == [("a", 0)]
    assert 0.07 <= elapsed < 1.0


def test_waiting_consumer_wakes_when_a_producer_fills_the_lane():
    buf = AlignedBuffer([lane(max_batch=3, max_wait_ms=10_000)], [live("a")])
    buf.put(frame("a", 0), 0.1)

    def fill():
        time.sleep(0.05)
        buf.put(frame("a", 1), 0.1)
        buf.put(frame("a", 2), 0.1)

    threading.Thread(target=fill).start()
    start = time.monotonic()
    batch = buf.next_batch(timeout=5)
    assert len(batch) == 3 and time.monotonic() - start < 2.0


def test_live_frames_older_than_max_age_are_dropped_at_batching_time():
    clock = FakeClock()
    lanes = [lane(max_batch=8, max_wait_ms=50, max_age_ms=100)]
    buf = AlignedBuffer(lanes, [live("cam"), file("clip")], clock)
    buf.put(frame("cam", 0), 0.1)
    buf.put(frame("cam", 1), 0.1)
    buf.put(frame("clip", 0), 0.1)
    clock.advance_ms(100.5)
    buf.put(frame("cam", 2), 0.1)
    # cam 0 and 1 aged out; the file frame is as old but files lose nothing; cam 2 is young enough
    assert ids(buf.next_batch(0)) == [("cam", 2), ("clip", 0)]
    stats = buf.stats()
    assert stats["streams"]["cam"]["dropped_age"] == 2
    assert stats["streams"]["clip"]["dropped_age"] == 0
    assert stats["lanes"]["default"]["dropped_age"] == 2


def test_lane_whose_streams_cannot_grow_flushes_without_waiting():
    buf = AlignedBuffer([lane(max_batch=16, max_wait_ms=10_000)], [file("clip", ring=4)], FakeClock())
    for seq in range(4):
        buf.put(frame("clip", seq), 0.1)
    assert len(buf.next_batch(0)) == 4
