"""Outbox: durable, ordered, retried, de-duplicated delivery (fake outputs, real SQLite). What it does with events
and outputs that fail is in test_outbox_faults.py."""
from __future__ import annotations

import logging
import sqlite3
import threading

import pytest

from pipeline.backoff import Backoff
from pipeline.errors import ConfigError
from pipeline.sinks.outbox import Outbox
from tests.support.outbox import FAST, RecordingOutput, make_events
from tests.support.waiting import wait_until


def test_events_are_delivered_to_every_output_in_order(tmp_path):
    a, b = RecordingOutput("a"), RecordingOutput("b")
    events = make_events(20)
    with Outbox(tmp_path / "outbox.db", [a, b], backoff=FAST) as outbox:
        assert outbox.put(events[:10]) == 10
        assert outbox.put(events[10:]) == 10
        assert outbox.wait_delivered(5)
        stats = outbox.stats()
    assert [e.event_id for e in a.delivered] == [e.event_id for e in events]
    assert a.delivered == b.delivered == events  # payloads round-trip exactly
    assert stats["a"] == {"delivered": 20, "failed": 0, "dead": 0, "pending": 0}
    assert a.closed and b.closed


def test_an_outbox_path_in_the_home_folder_is_kept_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with Outbox("~/state/outbox.db", [RecordingOutput("a")], backoff=FAST) as outbox:
        outbox.put(make_events(1))
    assert (tmp_path / "home" / "state" / "outbox.db").is_file()
    assert not (tmp_path / "~").exists()


def test_failing_output_keeps_order_and_receives_backlog_when_it_recovers(tmp_path):
    healthy, flaky = RecordingOutput("healthy"), RecordingOutput("flaky")
    flaky.failing.set()
    events = make_events(8)
    with Outbox(tmp_path / "outbox.db", [healthy, flaky], backoff=FAST) as outbox:
        outbox.put(events)
        assert wait_until(lambda: len(healthy.delivered) == 8)
        assert wait_until(lambda: flaky.attempts >= 3)
        stats = outbox.stats()
        assert stats["flaky"]["pending"] == 8 and stats["flaky"]["failed"] >= 3
        assert stats["healthy"]["pending"] == 0  # one failing output does not hold the others back
        flaky.failing.clear()
        assert outbox.wait_delivered(5)
    assert flaky.delivered == events


def test_an_output_that_recovers_says_so_once(tmp_path, caplog):
    """Before, its failures were logged and then nothing: a recovered output looked like a courier gone quiet."""
    caplog.set_level(logging.INFO, logger="pipeline.sinks.courier")
    healthy, flaky = RecordingOutput("healthy"), RecordingOutput("flaky")
    flaky.failing.set()
    with Outbox(tmp_path / "outbox.db", [healthy, flaky], backoff=FAST) as outbox:
        outbox.put(make_events(4))
        assert wait_until(lambda: flaky.attempts >= 3)
        flaky.failing.clear()
        assert outbox.wait_delivered(5)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.sinks.courier" and r.levelno == logging.INFO]
    assert len(said) == 1 and said[0].startswith("output 'flaky': delivering again: event "), said


def test_duplicate_event_ids_are_stored_and_delivered_once(tmp_path):
    out = RecordingOutput()
    events = make_events(5)
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        assert outbox.put(events) == 5
        assert outbox.put(events[2:] + make_events(1, start=5)) == 1
        assert outbox.wait_delivered(5)
        assert outbox.put(events[:1]) == 0  # already delivered: still recognised
        assert outbox.wait_delivered(5)  # had it been stored again, it would be delivered by now
    assert [e.track_id for e in out.delivered] == [0, 1, 2, 3, 4, 5]


def test_pending_events_survive_a_restart_and_are_delivered_next_time(tmp_path):
    path = tmp_path / "outbox.db"
    first = RecordingOutput("hook")
    first.failing.set()
    events = make_events(6)
    outbox = Outbox(path, [first], backoff=FAST)
    outbox.open()
    outbox.put(events)
    assert wait_until(lambda: first.attempts >= 1)
    assert outbox.close(timeout=2)
    assert first.delivered == []

    second = RecordingOutput("hook")  # same name: same cursor
    second.failing.set()  # held back until the pending count is read: delivery starts on open
    with Outbox(path, [second], backoff=FAST) as reopened:
        assert reopened.stats()["hook"]["pending"] == 6
        second.failing.clear()
        assert reopened.wait_delivered(5)
    assert second.delivered == events


def test_delivered_events_are_not_repeated_after_a_restart(tmp_path):
    path = tmp_path / "outbox.db"
    out = RecordingOutput("hook")
    with Outbox(path, [out], backoff=FAST) as outbox:
        outbox.put(make_events(3))
        assert outbox.wait_delivered(5)
    again = RecordingOutput("hook")
    with Outbox(path, [again], backoff=FAST) as outbox:
        outbox.put(make_events(2, start=3))
        assert outbox.wait_delivered(5)
    assert [e.track_id for e in again.delivered] == [3, 4]


def test_put_has_stored_the_events_before_it_returns(tmp_path):
    path = tmp_path / "outbox.db"
    out = RecordingOutput()
    out.failing.set()
    with Outbox(path, [out], backoff=FAST) as outbox:
        outbox.put(make_events(4))
        with sqlite3.connect(path) as reader:  # another connection, as another process would see it
            assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4


def test_output_with_a_retry_limit_gives_up_and_moves_on(tmp_path):
    out = RecordingOutput()
    out.max_retries = 2
    out.failing.set()
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        outbox.put(make_events(2))
        assert outbox.wait_delivered(5)
        stats = outbox.stats()["rec"]
    assert stats["dead"] == 2 and stats["failed"] == 6 and stats["delivered"] == 0
    with sqlite3.connect(tmp_path / "outbox.db") as reader:
        assert reader.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 2


def test_close_returns_promptly_while_an_output_is_failing(tmp_path):
    out = RecordingOutput()
    out.failing.set()
    outbox = Outbox(tmp_path / "outbox.db", [out], backoff=Backoff(min_s=30, max_s=60))
    outbox.open()
    outbox.put(make_events(1))
    assert wait_until(lambda: out.attempts >= 1)
    assert outbox.close(timeout=2)  # the courier left its 30 s backoff wait: it did not outlast the timeout


def test_outputs_with_the_same_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unique names"):
        Outbox(tmp_path / "outbox.db", [RecordingOutput("x"), RecordingOutput("x")])


def test_an_output_raising_an_unexpected_error_is_retried_not_abandoned(tmp_path):
    class Buggy(RecordingOutput):
        def deliver(self, event):
            self.attempts += 1
            if self.attempts <= 2:
                raise KeyError("bug in the output")
            self.delivered.append(event)

    out = Buggy("buggy")
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        outbox.put(make_events(3))
        assert outbox.wait_delivered(5)
        assert outbox.stats()["buggy"]["failed"] == 2
    assert [e.track_id for e in out.delivered] == [0, 1, 2]


def test_events_put_from_many_threads_are_all_delivered_once(tmp_path):
    out = RecordingOutput()
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        threads = [threading.Thread(target=lambda s=s: [outbox.put([e]) for e in make_events(25, stream=s)])
                   for s in ("cam-1", "cam-2", "cam-3", "cam-4")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert outbox.wait_delivered(10)
    assert len(out.delivered) == 100 and len({e.event_id for e in out.delivered}) == 100
    for stream in ("cam-1", "cam-2", "cam-3", "cam-4"):  # each producer's own order is kept
        assert [e.track_id for e in out.delivered if e.stream_id == stream] == list(range(25))


def test_delivered_events_are_pruned_after_the_keep_window_but_pending_ones_stay(tmp_path):
    path = tmp_path / "outbox.db"
    fast, slow = RecordingOutput("fast"), RecordingOutput("slow")
    with Outbox(path, [fast, slow], backoff=FAST, keep_delivered_s=0.0) as outbox:
        outbox.put(make_events(5))
        assert wait_until(lambda: len(fast.delivered) == 5 and len(slow.delivered) == 5)
        slow.failing.set()
        outbox.put(make_events(3, start=5))  # prunes the 5 both outputs have
        assert wait_until(lambda: len(fast.delivered) == 8)
        outbox.put(make_events(1, start=8))  # prunes nothing "slow" still needs
        with sqlite3.connect(path) as reader:
            stored = [row[0] for row in reader.execute("SELECT event_id FROM events ORDER BY seq")]
        assert stored == [e.event_id for e in make_events(4, start=5)]
        slow.failing.clear()
        assert outbox.wait_delivered(5)
    assert [e.track_id for e in slow.delivered] == list(range(9))
