"""AlignedBuffer: lane priority, round-robin, drops, blocking files, tails, counters."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.align import AlignedBuffer
from pipeline.config.models import LaneConfig
from pipeline.errors import ConfigError
from tests.support.aligned import FakeClock, live, file, frame, ids, lane


def test_higher_priority_lane_is_served_first_when_both_are_ready():
    clock = FakeClock()
    lanes = [lane("bulk", priority=0, max_batch=2), lane("urgent", priority=10, max_batch=2)]
    buf = AlignedBuffer(lanes, [live("slowcam", "bulk"), live("door", "urgent")], clock)
    for seq in range(2):
        buf.put(frame("slowcam", seq), 0.1)
    for seq in range(2):
        buf.put(frame("door", seq), 0.1)
    assert [buf.next_batch(0).lane for _ in range(2)] == ["urgent", "bulk"]


def test_ready_low_priority_lane_is_not_held_back_by_a_waiting_high_priority_lane():
    clock = FakeClock()
    lanes = [lane("bulk", priority=0, max_batch=2), lane("urgent", priority=10, max_batch=2, max_wait_ms=50)]
    buf = AlignedBuffer(lanes, [live("slowcam", "bulk"), live("door", "urgent")], clock)
    buf.put(frame("door", 0), 0.1)
    buf.put(frame("slowcam", 0), 0.1)
    buf.put(frame("slowcam", 1), 0.1)
    assert buf.next_batch(0).lane == "bulk"
    assert buf.next_batch(0) is None
    clock.advance_ms(50)
    assert ids(buf.next_batch(0)) == [("door", 0)]


def test_round_robin_serves_a_slow_camera_alongside_a_fast_one():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=4)], [live("fast", ring=4), live("slow", ring=4)], clock)
    served = {"fast": 0, "slow": 0}
    fast_seq = 0
    for tick in range(10):  # per tick: fast camera sends 6 frames, slow sends 1, the detector takes 4
        for _ in range(6):
            buf.put(frame("fast", fast_seq), 0.1)
            fast_seq += 1
        buf.put(frame("slow", tick), 0.1)
        for f in buf.next_batch(0).frames:
            served[f.stream_id] += 1
    stats = buf.stats()["streams"]
    assert served == {"slow": 10, "fast": 30}
    assert stats["slow"]["dropped_overflow"] == 0
    assert stats["fast"]["dropped_overflow"] == 60 - 30 - stats["fast"]["depth"]


def test_round_robin_shares_capacity_equally_between_equally_fast_cameras():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=4)], [live("a", ring=16), live("b", ring=16)], clock)
    for seq in range(12):
        buf.put(frame("a", seq), 0.1)
        buf.put(frame("b", seq), 0.1)
    first, second = buf.next_batch(0), buf.next_batch(0)
    assert ids(first) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert ids(second) == [("a", 2), ("b", 2), ("a", 3), ("b", 3)]


def test_stalled_stream_never_delays_the_batch_of_the_others():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=3, max_wait_ms=30)], [live("a"), live("b"), live("stalled")], clock)
    buf.put(frame("a", 0), 0.1)
    buf.put(frame("b", 0), 0.1)
    clock.advance_ms(30)
    assert ids(buf.next_batch(0)) == [("a", 0), ("b", 0)]
    for seq in (1, 2):
        buf.put(frame("a", seq), 0.1)
    buf.put(frame("b", 1), 0.1)
    assert ids(buf.next_batch(0)) == [("a", 1), ("b", 1), ("a", 2)]


def test_full_live_ring_drops_its_oldest_frames_and_counts_them():
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=0)], [live("cam", ring=3)], clock)
    assert all(buf.put(frame("cam", seq), 0.1) for seq in range(5))
    assert ids(buf.next_batch(0)) == [("cam", 2), ("cam", 3), ("cam", 4)]
    stats = buf.stats()
    assert stats["streams"]["cam"]["dropped_overflow"] == 2
    assert stats["lanes"]["default"]["dropped_overflow"] == 2


def test_file_put_times_out_on_a_full_ring_without_dropping():
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=1000)], [file("clip", ring=2), live("cam")])
    assert buf.put(frame("clip", 0), 0.1) and buf.put(frame("clip", 1), 0.1)
    start = time.monotonic()
    assert buf.put(frame("clip", 2), timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert buf.stats()["streams"]["clip"]["dropped_overflow"] == 0


def test_blocked_file_producer_resumes_when_a_batch_is_taken():
    buf = AlignedBuffer([lane(max_batch=2, max_wait_ms=1000)], [file("clip", ring=2), live("cam")])
    buf.put(frame("clip", 0), 0.1)
    buf.put(frame("clip", 1), 0.1)
    result = []
    producer = threading.Thread(target=lambda: result.append(buf.put(frame("clip", 2), timeout=5)))
    producer.start()
    producer.join(0.1)
    assert producer.is_alive(), "the producer should wait for room, not drop"
    assert ids(buf.next_batch(0)) == [("clip", 0), ("clip", 1)]
    producer.join(2)
    assert result == [True]


def test_file_streams_lose_nothing_under_a_slow_consumer():
    buf = AlignedBuffer([lane(max_batch=4, max_wait_ms=5)], [file("x", ring=2), file("y", ring=3)])
    stop = threading.Event()

    def produce(sid: str, count: int) -> None:
        try:
            for seq in range(count):
                while not buf.put(frame(sid, seq), timeout=0.05):
                    assert not stop.is_set()
        finally:
            buf.end_stream(sid)

    producers = [threading.Thread(target=produce, args=(sid, 60)) for sid in ("x", "y")]
    for p in producers:
        p.start()
    got: dict[str, list[int]] = {"x": [], "y": []}
    deadline = time.monotonic() + 20
    while not buf.finished and time.monotonic() < deadline:
        batch = buf.next_batch(0.5)
        for f in batch.frames if batch else []:
            got[f.stream_id].append(f.seq)
    stop.set()
    for p in producers:
        p.join(2)
    assert got == {"x": list(range(60)), "y": list(range(60))}
    assert all(s["dropped_overflow"] == 0 and s["dropped_age"] == 0 for s in buf.stats()["streams"].values())


def test_end_of_stream_flushes_the_tail_and_then_reports_finished():
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=10_000)], [file("a"), file("b")])
    for seq in range(3):
        buf.put(frame("a", seq), 0.1)
    buf.end_stream("a")
    assert buf.next_batch(0) is None, "b may still send frames"
    buf.end_stream("b")
    assert not buf.finished
    assert ids(buf.next_batch(0)) == [("a", 0), ("a", 1), ("a", 2)]
    assert buf.finished
    start = time.monotonic()
    assert buf.next_batch(timeout=5) is None
    assert time.monotonic() - start < 1.0


def test_close_wakes_a_waiting_consumer_and_refuses_puts_without_letting_file_workers_spin():
    buf = AlignedBuffer([lane()], [live("a"), file("clip")])
    threading.Timer(0.05, buf.close).start()
    start = time.monotonic()
    assert buf.next_batch(timeout=5) is None
    assert time.monotonic() - start < 1.0
    assert buf.put(frame("a", 0), 0.1) is False
    start = time.monotonic()
    assert buf.put(frame("clip", 0), 0.05) is False
    assert time.monotonic() - start >= 0.045
    assert buf.stats()["streams"]["clip"]["received"] == 0


def test_many_producers_and_two_consumers_deliver_every_frame_once_in_stream_order():
    streams = [file(f"f{i}", ring=3) for i in range(6)] + [live(f"l{i}", ring=64) for i in range(2)]
    buf = AlignedBuffer([lane(max_batch=5, max_wait_ms=2)], streams)

    def produce(sid: str) -> None:
        try:
            for seq in range(40):
                while not buf.put(frame(sid, seq), timeout=0.05):
                    pass
        finally:
            buf.end_stream(sid)

    batches, lock = [], threading.Lock()

    def consume() -> None:
        deadline = time.monotonic() + 20
        while not buf.finished and time.monotonic() < deadline:
            batch = buf.next_batch(0.2)
            if batch is not None:
                with lock:
                    batches.append(ids(batch))

    threads = [threading.Thread(target=produce, args=(s.id,)) for s in streams]
    threads += [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    delivered = [item for batch in batches for item in batch]
    assert sorted(delivered) == sorted((s.id, seq) for s in streams for seq in range(40))
    for batch in batches:
        assert len(batch) <= 5
        for sid in {sid for sid, _ in batch}:
            seqs = [seq for s, seq in batch if s == sid]
            assert seqs == sorted(seqs)


def test_stats_report_counters_per_stream_and_per_lane():
    clock = FakeClock()
    lanes = [lane("bulk", max_batch=2), lane("urgent", priority=5, max_batch=3)]
    buf = AlignedBuffer(lanes, [live("a", "bulk", ring=2), live("b", "urgent"), file("c", "urgent")], clock)
    for seq in range(3):
        buf.put(frame("a", seq), 0.1)
    for seq in range(2):
        buf.put(frame("b", seq), 0.1)
    buf.put(frame("c", 0), 0.1)
    buf.next_batch(0)
    buf.next_batch(0)
    buf.put(frame("c", 1), 0.1)
    stats = buf.stats()
    assert stats["streams"]["a"] == {
        "lane": "bulk", "live": True, "received": 3, "batched": 2, "dropped_overflow": 1,
        "dropped_age": 0, "depth": 0, "ended": False,
    }
    assert stats["streams"]["c"]["live"] is False and stats["streams"]["c"]["depth"] == 1
    urgent = stats["lanes"]["urgent"]
    assert (urgent["received"], urgent["batched"], urgent["depth"], urgent["batches"]) == (4, 3, 1, 1)
    assert urgent["mean_batch_size"] == 3.0 and urgent["streams"] == ["b", "c"]
    assert stats["lanes"]["bulk"]["mean_batch_size"] == 2.0


def test_a_lane_keeps_counting_the_frames_of_a_stream_removed_from_it():
    """Its received, batched and dropped totals went down when a camera was removed or changed."""
    clock = FakeClock()
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=0)], [live("gone", ring=2), live("stays")], clock)
    for seq in range(3):
        buf.put(frame("gone", seq), 0.1)
    buf.put(frame("stays", 0), 0.1)
    assert len(buf.next_batch(0)) == 3
    before = {key: buf.stats()["lanes"]["default"][key] for key in ("received", "batched", "dropped_overflow")}
    assert before == {"received": 4, "batched": 3, "dropped_overflow": 1}
    buf.end_stream("gone")
    assert buf.take_ended() == ["gone"]
    buf.remove_stream("gone")
    after = buf.stats()["lanes"]["default"]
    assert after["streams"] == ["stays"] and {key: after[key] for key in before} == before


def test_stream_in_an_unknown_lane_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match="'cam-9'.*'fast'"):
        AlignedBuffer([lane()], [live("cam-9", lane="fast")])


def test_frame_from_an_unconfigured_stream_is_refused_with_its_name():
    buf = AlignedBuffer([lane()], [live("a")])
    with pytest.raises(ConfigError, match="'ghost'"):
        buf.put(frame("ghost", 0), 0.1)


def test_lanes_of_equal_priority_are_served_oldest_frame_first():
    clock = FakeClock()
    buf = AlignedBuffer([lane("east", max_batch=1), lane("west", max_batch=1)], [live("e", "east"), live("w", "west")], clock)
    buf.put(frame("w", 0), 0.1)
    clock.advance_ms(1)
    buf.put(frame("e", 0), 0.1)
    assert [buf.next_batch(0).lane for _ in range(2)] == ["west", "east"]


def test_put_after_end_stream_reopens_the_stream_for_a_restarted_worker():
    buf = AlignedBuffer([lane(max_batch=8, max_wait_ms=10_000)], [file("clip", ring=4), file("other")], FakeClock())
    buf.end_stream("clip")
    buf.end_stream("other")
    assert buf.finished
    buf.put(frame("clip", 0), 0.1)
    assert not buf.finished and buf.next_batch(0) is None, "a reopened stream may send more: wait"
    buf.end_stream("clip")
    assert ids(buf.next_batch(0)) == [("clip", 0)] and buf.finished


def test_on_room_reports_every_frame_that_leaves_a_ring_batched_or_dropped():
    """What decode processes mirror as credits: one per frame batched, dropped on overflow or by age."""
    clock = FakeClock()
    room = {"f": 0, "l": 0}
    buf = AlignedBuffer([lane(max_batch=3, max_age_ms=100)], [file("f", ring=2), live("l", ring=2)], clock)
    for sid in room:
        buf.on_room(sid, lambda n, sid=sid: room.__setitem__(sid, room[sid] + n))
    buf.put(frame("f", 0), 0.1)
    buf.put(frame("f", 1), 0.1)
    assert not buf.put(frame("f", 2), 0.01)  # no permit left: the file waits
    for seq in range(3):  # the third overflows the live ring: its oldest frame goes
        buf.put(frame("l", seq), 0.1)
    assert room == {"f": 0, "l": 1}
    batch = buf.next_batch(0)
    assert sorted(ids(batch)) == [("f", 0), ("f", 1), ("l", 1)]
    assert room == {"f": 2, "l": 2}
    clock.advance_ms(200)  # l2, still waiting, is now too old
    buf.put(frame("l", 3), 0.1)
    clock.advance_ms(200)  # and so is l3
    assert buf.next_batch(0) is None
    assert room == {"f": 2, "l": 4}
    assert buf.put(frame("f", 2), 0.1)  # the room reported is real


@pytest.mark.parametrize("reader", ["stats", "finished"])
def test_frames_stay_in_order_and_the_end_is_reported_while_another_thread_reads_the_counters(reader):
    """The service's counters (`stats`) and the runner's `finished` drain the producers' frames into the rings
    from their own threads while the consumer waits for them: a consumer that had taken a frame before such a
    drain put it in the ring after the frames that followed it, and a stream's last frame accepted after its
    end marker reopened the stream, so its end was never reported. Repeated, as the interleaving is the
    scheduler's (the code before this failed in about 1 to 20 of 100 runs)."""
    for _ in range(150):
        buffer = AlignedBuffer([LaneConfig(name="default", max_batch=1, max_wait_ms=0)], [file("f", ring=4)])
        stop = threading.Event()

        def produce():
            for seq in range(30):
                while not buffer.put(frame("f", seq), timeout=0.1):
                    pass
            buffer.end_stream("f")

        def read():
            while not stop.is_set():
                getattr(buffer, reader) if reader == "finished" else buffer.stats()

        threads = [threading.Thread(target=produce), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        taken, ended = [], []
        try:
            while not ended:
                batch = buffer.next_batch(timeout=5)
                taken += [f.seq for f in batch.frames] if batch else []
                ended = buffer.take_ended()
                assert batch or ended, f"nothing for 5 s after frames {taken}: the end was lost"
        finally:
            stop.set()
            buffer.close()
            for thread in threads:
                thread.join(10)
        assert taken == list(range(30)) and ended == ["f"]
