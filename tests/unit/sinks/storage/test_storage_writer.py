"""BatchWriter: batching, interval flushes, retry without loss, bounded queue, close."""
import logging
import threading

import pytest

from pipeline.errors import SinkError
from pipeline.sinks.storage.writer import BatchWriter, StorageUnavailable
from tests.support.waiting import wait_until


class Item:
    def __init__(self, value: int, size: int = 1):
        self.value, self.size = value, size


class FlakyDatabase:
    """Records batches; raises StorageUnavailable while `down` is set."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.down = threading.Event()
        self.attempts = 0

    def write(self, items):
        self.attempts += 1
        if self.down.is_set():
            raise StorageUnavailable("database restarting")
        self.batches.append([i.value for i in items])


def make_writer(db, **kw):
    options = dict(batch_size=10, flush_interval_s=0.05, queue_size=100, put_timeout_s=0.2, backoff_max_s=0.05)
    options.update(kw)
    return BatchWriter("test", db.write, **options)


def test_each_outage_is_logged_when_it_starts_and_when_it_ends(caplog):
    """Before, only the run's first outage was said at once (a later one once its retries reached the ceiling),
    and none was said to be over."""
    caplog.set_level(logging.INFO, logger="pipeline.sinks.storage.writer")
    db = FlakyDatabase()
    writer = make_writer(db, batch_size=1, backoff_max_s=5.0)
    writer.start()
    for outage in range(2):
        failed_before = db.attempts - len(db.batches)
        db.down.set()
        writer.put(Item(outage))
        assert wait_until(lambda: db.attempts - len(db.batches) >= failed_before + 2)  # retried at least once
        db.down.clear()
        assert wait_until(lambda: len(db.batches) == outage + 1)
    assert writer.close(timeout=5)
    said = [("down" if "database restarting; keeping 1 rows" in r.getMessage() else
             "back" if "writing again after" in r.getMessage() else r.getMessage()) for r in caplog.records]
    assert [kind for i, kind in enumerate(said) if i == 0 or said[i - 1] != kind] == ["down", "back", "down", "back"]


def test_rows_are_written_in_batches_of_batch_size():
    db = FlakyDatabase()
    writer = make_writer(db, flush_interval_s=10.0)
    for i in range(100):  # queued before the thread starts, so batches are exactly full
        writer.put(Item(i))
    writer.start()
    assert writer.close(timeout=5)
    assert [len(b) for b in db.batches] == [10] * 10
    assert sum(db.batches, []) == list(range(100))


def test_item_size_counts_rows_toward_the_batch():
    db = FlakyDatabase()
    writer = make_writer(db, flush_interval_s=10.0)
    for i in range(6):
        writer.put(Item(i, size=5))
    writer.start()
    assert writer.close(timeout=5)
    assert [len(b) for b in db.batches] == [2, 2, 2]


def test_a_partial_batch_is_written_after_flush_interval():
    db = FlakyDatabase()
    writer = make_writer(db, flush_interval_s=0.05)
    writer.start()
    writer.put(Item(1))
    assert wait_until(lambda: db.batches, timeout=2)
    assert db.batches == [[1]]
    assert writer.close(timeout=5)


def test_batch_is_kept_and_retried_while_database_is_down():
    db = FlakyDatabase()
    db.down.set()
    writer = make_writer(db)
    writer.start()
    for i in range(25):
        writer.put(Item(i))
    assert wait_until(lambda: db.attempts >= 2)
    assert db.batches == []
    db.down.clear()
    assert writer.close(timeout=5)
    assert sum(db.batches, []) == list(range(25))
    assert writer.stats()["retries"] >= 1 and writer.stats()["rows_lost"] == 0


def test_put_raises_sink_error_after_timeout_when_queue_stays_full():
    db = FlakyDatabase()
    db.down.set()
    writer = make_writer(db, queue_size=5, batch_size=1)
    writer.start()
    with pytest.raises(SinkError, match="not stored"):
        for i in range(20):
            writer.put(Item(i))
    assert writer.stats()["put_timeouts"] == 1
    db.down.clear()
    assert writer.close(timeout=5)


def test_close_reports_rows_lost_when_database_never_returns():
    db = FlakyDatabase()
    db.down.set()
    writer = make_writer(db)
    writer.start()
    for i in range(3):
        writer.put(Item(i))
    assert writer.close(timeout=0.2) is False
    assert writer.stats()["rows_lost"] == 3
    with pytest.raises(SinkError, match="after close"):
        writer.put(Item(9))


def test_rejected_batch_is_counted_and_later_batches_still_land():
    calls = []

    def write(items):
        calls.append([i.value for i in items])
        if len(calls) == 1:
            raise SinkError("bad row")

    writer = BatchWriter("test", write, batch_size=2, flush_interval_s=10.0, queue_size=10)
    for i in range(4):
        writer.put(Item(i))
    writer.start()
    assert writer.close(timeout=5)
    assert calls == [[0, 1], [2, 3]]
    assert writer.stats()["rows_rejected"] == 2 and writer.stats()["rows_written"] == 2


def test_unexpected_write_error_stops_writer_and_surfaces_in_put():
    def write(items):
        raise ZeroDivisionError("bug")

    writer = BatchWriter("test", write, batch_size=1, flush_interval_s=0.01, queue_size=10)
    writer.start()
    writer.put(Item(0))
    assert wait_until(lambda: not writer.stats()["alive"], timeout=2)
    with pytest.raises(SinkError, match="writer stopped"):
        writer.put(Item(1))
    assert writer.close(timeout=1) is False



def test_a_long_maintenance_task_runs_one_step_between_batches_so_queued_rows_keep_being_written():
    order: list[str] = []

    def write(items):
        order.append(f"batch {items[0].value}-{items[-1].value}")

    def retention_step() -> bool:  # a backlog of five steps
        order.append("step")
        return order.count("step") < 5

    writer = BatchWriter("test", write, batch_size=10, flush_interval_s=10.0, queue_size=100,
                         maintenance=retention_step, maintenance_interval_s=3600.0)
    for i in range(40):  # queued before the thread starts: rows wait to be written all along the task
        writer.put(Item(i))
    writer.start()
    assert writer.close(timeout=5)
    assert order == ["step", "batch 0-9", "step", "batch 10-19", "step", "batch 20-29", "step", "batch 30-39", "step"]
