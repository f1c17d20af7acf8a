"""Bounded queues: overflow policies, counted drops, timeouts, close, priority order."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.runtime.queues import BoundedQueue, Overflow, QueueClosed, QueueEmpty


def drain(q: BoundedQueue) -> list:
    items = []
    while len(q):
        items.append(q.get(0))
    return items


def test_drop_oldest_keeps_the_newest_items_and_counts_each_drop():
    q = BoundedQueue(3, Overflow.DROP_OLDEST, name="live")
    assert all(q.put(i) for i in range(5))
    assert drain(q) == [2, 3, 4]
    assert q.dropped == 2 and q.stats()["dropped"] == 2


def test_drop_newest_refuses_new_items_and_counts_each_refusal():
    q = BoundedQueue(2, Overflow.DROP_NEWEST)
    assert [q.put(i) for i in range(4)] == [True, True, False, False]
    assert drain(q) == [0, 1]
    assert q.dropped == 2


def test_blocking_put_times_out_when_full_without_dropping():
    q = BoundedQueue(1, Overflow.BLOCK)
    q.put("a", timeout=0.1)
    start = time.monotonic()
    assert q.put("b", timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert q.dropped == 0 and drain(q) == ["a"]


def test_blocking_put_without_timeout_is_refused_when_full():
    q = BoundedQueue(1, Overflow.BLOCK, name="sink:cam-3")
    q.put("a", timeout=0.1)
    with pytest.raises(ValueError, match="sink:cam-3.*timeout"):
        q.put("b")


def test_blocked_producer_resumes_when_a_consumer_takes_an_item():
    q = BoundedQueue(1, Overflow.BLOCK)
    q.put("a", timeout=0.1)
    result = []
    producer = threading.Thread(target=lambda: result.append(q.put("b", timeout=5)))
    producer.start()
    producer.join(0.05)
    assert producer.is_alive()
    assert q.get(0.1) == "a"
    producer.join(2)
    assert result == [True] and q.get(0.1) == "b"


def test_get_times_out_with_queue_empty():
    q = BoundedQueue(2)
    start = time.monotonic()
    with pytest.raises(QueueEmpty):
        q.get(0.05)
    assert time.monotonic() - start >= 0.045


def test_close_wakes_a_waiting_consumer_after_the_remaining_items():
    q = BoundedQueue(4)
    q.put(1, timeout=0.1)
    threading.Timer(0.05, q.close).start()
    assert q.get(1) == 1
    start = time.monotonic()
    with pytest.raises(QueueClosed):
        q.get(5)
    assert time.monotonic() - start < 1.0
    with pytest.raises(QueueClosed):
        q.put(2, timeout=0.1)


def test_close_wakes_a_blocked_producer():
    q = BoundedQueue(1)
    q.put(1, timeout=0.1)
    errors = []

    def produce():
        try:
            q.put(2, timeout=5)
        except QueueClosed as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    q.close()
    producer.join(1)
    assert not producer.is_alive() and len(errors) == 1


def test_stats_report_depth_and_counts():
    q = BoundedQueue(2, Overflow.DROP_OLDEST, name="x")
    for i in range(3):
        q.put(i)
    q.get(0)
    assert q.stats() == {"depth": 1, "capacity": 2, "put": 3, "got": 1, "dropped": 1, "overflow": "drop_oldest"}


def test_weights_count_against_the_capacity_and_a_heavy_item_still_fits_an_empty_queue():
    q = BoundedQueue(10, Overflow.BLOCK)
    assert q.put("six frames", timeout=0.1, weight=6)
    assert q.put("four more", timeout=0.1, weight=4) and len(q) == 10
    assert q.put("one", timeout=0.01) is False  # full by weight, not by count
    assert q.get(0) == "six frames" and len(q) == 4
    drain(q)
    assert q.put("a whole batch", timeout=0.1, weight=64) and len(q) == 64
