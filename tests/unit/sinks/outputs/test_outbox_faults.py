"""Outbox when things go wrong (fake outputs, real SQLite): events it cannot encode or store, outputs that refuse,
fail to close or get stuck, a prune or a database that fails, outages across events given up on, dead letters."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import replace

import pytest

from pipeline.backoff import Backoff
from pipeline.errors import EventRefused, SinkError
from pipeline.sinks.outbox import Outbox
from pipeline.sinks.outputs.payload import event_from_json
from pipeline.types import Event, Moment
from tests.support.logs import configured_log
from tests.support.outbox import FAST, RecordingOutput, make_events
from tests.support.waiting import wait_until


def test_an_event_that_cannot_be_encoded_does_not_take_the_others_along(tmp_path):
    at = Moment("run-1", "cam-1", 5, 1_700_000_000 * 10**9)
    good, bad = at.event("r", "alert", 1, 0, {"n": 1}), at.event("r", "alert", 2, 0, {"n": float("nan")})
    with Outbox(tmp_path / "outbox.db", []) as outbox:
        assert outbox.put([bad, good]) == 1
        assert outbox.unencodable == 1
    stored = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT event_id FROM events").fetchall()
    assert stored == [(good.event_id,)]


@pytest.mark.parametrize("field, value", [("ts_ns", 2**63), ("stream_id", "cam-\udc80")])
def test_an_event_sqlite_cannot_hold_is_set_aside_and_the_outbox_goes_on(tmp_path, field, value):
    good = make_events(2)
    bad = replace(make_events(1, start=9)[0], **{field: value})
    out = RecordingOutput()
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        assert outbox.put([good[0], bad]) == 1
        assert outbox.unencodable == 1
        assert outbox.put([good[1]]) == 1  # no transaction was left open
        assert outbox.wait_delivered(5)
    assert out.delivered == good


class RefusingOutput(RecordingOutput):
    """Refuses for good the events whose track id is in `refuse` (a receiver's 422)."""

    def __init__(self, refuse: set[int]):
        super().__init__()
        self.refuse = refuse

    def deliver(self, event: Event) -> None:
        if event.track_id in self.refuse:
            self.attempts += 1
            raise EventRefused(f"receiver answered 422 to event {event.event_id}")
        super().deliver(event)


def test_an_event_refused_for_good_becomes_a_dead_letter_at_once_and_the_next_goes_on(tmp_path):
    out = RefusingOutput({1})  # retries until delivered otherwise
    events = make_events(3)
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        outbox.put(events)
        assert outbox.wait_delivered(5)
        assert outbox.stats()["rec"] == {"delivered": 2, "failed": 0, "dead": 1, "pending": 0}
    assert out.attempts == 3 and [e.track_id for e in out.delivered] == [0, 2]
    dead = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT event_id, error FROM dead_letters").fetchall()
    assert dead == [(events[1].event_id, f"receiver answered 422 to event {events[1].event_id}")]


def test_a_failing_prune_leaves_the_stored_events_and_later_ones_going(tmp_path):
    path = tmp_path / "outbox.db"
    out = RecordingOutput()
    with Outbox(path, [out], backoff=FAST, keep_delivered_s=0.0) as outbox:
        outbox.put(make_events(2))
        assert outbox.wait_delivered(5)
        with sqlite3.connect(path) as db:  # every DELETE now fails inside SQLite
            db.execute("CREATE TRIGGER no_prune BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'disk I/O'); END")
        assert outbox.put(make_events(2, start=2)) == 2  # stored though its prune failed
        assert outbox.put(make_events(1, start=4)) == 1
        assert outbox.wait_delivered(5)
    assert [e.track_id for e in out.delivered] == [0, 1, 2, 3, 4]


def test_closing_goes_on_when_an_output_fails_to_close(tmp_path):
    class BrokenClose(RecordingOutput):
        def close(self) -> None:
            raise OSError(28, "No space left on device")

    broken, other = BrokenClose("broken"), RecordingOutput("other")
    outbox = Outbox(tmp_path / "outbox.db", [broken, other], backoff=FAST)
    outbox.open()
    assert outbox.close()
    assert other.closed


def test_an_output_swapped_while_its_old_courier_is_stuck_keeps_the_newer_cursor(tmp_path):
    """A reload replaces an output whose delivery hangs: the new courier of the name delivers on; when the old one's
    delivery returns at last, the cursor it writes is older and must not move the stored one back (a restart would
    deliver again what the new output already has)."""
    entered, release = threading.Event(), threading.Event()

    class Hanging(RecordingOutput):
        def deliver(self, event: Event) -> None:
            entered.set()
            release.wait(30)
            super().deliver(event)

    path = tmp_path / "outbox.db"
    old = Hanging("hook")
    outbox = Outbox(path, [old], backoff=FAST)
    outbox.open()
    outbox.put(make_events(1))
    assert entered.wait(5)
    [old_courier] = [t for t in threading.enumerate() if t.name == "outbox:hook"]
    outbox.remove_output("hook", timeout=0)  # its thread is still inside the delivery
    new = RecordingOutput("hook")
    outbox.add_output(new)
    outbox.put(make_events(4, start=1))
    assert wait_until(lambda: len(new.delivered) == 5)  # the first event too: the old one never finished it
    release.set()
    old_courier.join(5)  # its delivery returned, and it wrote the cursor of that event
    assert not old_courier.is_alive() and len(old.delivered) == 1
    assert outbox.close(timeout=5)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT delivered_seq FROM cursors WHERE output = 'hook'").fetchone() == (5,)
    again = RecordingOutput("hook")
    with Outbox(path, [again], backoff=FAST) as reopened:
        assert reopened.stats()["hook"]["pending"] == 0
    assert again.delivered == []


def test_a_courier_that_cannot_open_the_database_once_tries_again(tmp_path, monkeypatch):
    """E.g. no file descriptor left for a moment while a reload adds an output: the courier was gone for good."""
    import pipeline.sinks.courier as courier_module

    real_connect, failed = courier_module.connect, []

    def connect(path, synchronous):
        if synchronous == "NORMAL" and not failed:  # the courier's own connection, the first time
            failed.append(True)
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(path, synchronous)

    monkeypatch.setattr(courier_module, "connect", connect)
    out = RecordingOutput()
    events = make_events(3)
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        outbox.put(events)
        assert outbox.wait_delivered(5)
    assert failed and out.delivered == events


def test_a_damaged_outbox_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"not a database, written over by something else" * 100)
    with pytest.raises(SinkError, match=r"outbox\.db is damaged .*move it aside and start again"):
        Outbox(path, [RecordingOutput()])


class RecordingBackoff(Backoff):
    """Records how long the outage had lasted at each failed attempt (`outages`, shared with its fresh copies)."""

    def __init__(self, *args, outages: list[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.outages = [] if outages is None else outages

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.outages.append(self.down_s())
        return delay

    def fresh(self) -> "RecordingBackoff":
        return RecordingBackoff(self.min_s, self.max_s, clock=self._clock, outages=self.outages)


def test_an_outage_goes_on_across_events_given_up_so_the_retry_wait_keeps_growing(tmp_path):
    """max_retries gives up on one event, not on the outage: the next event's retries wait as long as the outage
    has lasted, rather than starting again at min_s (a down receiver was knocked on every 0.5 s for ever)."""
    ticks = iter(range(10**6))
    backoff = RecordingBackoff(min_s=0.01, max_s=0.05, clock=lambda: float(next(ticks)))
    out = RecordingOutput()
    out.max_retries = 1
    out.failing.set()
    with Outbox(tmp_path / "outbox.db", [out], backoff=backoff) as outbox:
        outbox.put(make_events(3))
        assert outbox.wait_delivered(5)
        assert outbox.stats()["rec"]["dead"] == 3
    assert len(backoff.outages) == 6  # two failed attempts per event
    assert all(b > a for a, b in zip(backoff.outages, backoff.outages[1:]))  # one outage, never started again


def test_an_event_given_up_on_leaves_the_next_one_the_outages_wait(tmp_path):
    """Giving up on an event does not end the wait before the next attempt: with max_retries 0 a receiver that
    stays down was tried once per event, back to back (200 attempts in 0.03 s), whatever the backoff said."""
    out = RecordingOutput()
    out.max_retries = 0
    out.failing.set()
    outbox = Outbox(tmp_path / "outbox.db", [out], backoff=Backoff(min_s=30, max_s=60))
    outbox.open()
    outbox.put(make_events(3))
    assert wait_until(lambda: outbox.stats()["rec"]["dead"] >= 1)
    assert outbox.close(timeout=2)  # the courier was waiting, and the close cut the wait short
    assert out.attempts == 1  # the next event waits its turn 30 s or more after the one given up


def test_a_delivery_the_outbox_cannot_record_while_locked_is_not_delivered_again(tmp_path, monkeypatch, caplog):
    """Another writer holds the database past the busy wait just after a delivery: the courier retries writing its
    cursor, not the delivery (the receiver got the same event every few seconds for as long as the lock lasted)."""
    import pipeline.sinks.courier as courier_module

    real_connect = courier_module.connect

    def connect(path, synchronous):  # the couriers' connections give up on a lock at once, not after 10 s
        conn = real_connect(path, synchronous)
        if synchronous == "NORMAL":
            conn.execute("PRAGMA busy_timeout = 10")
        return conn

    monkeypatch.setattr(courier_module, "connect", connect)
    path = tmp_path / "outbox.db"
    out = RecordingOutput("hook")
    out.failing.set()
    events = make_events(1)
    with Outbox(path, [out], backoff=FAST) as outbox:
        outbox.put(events)
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        out.failing.clear()
        assert wait_until(lambda: caplog.text.count("database is locked") >= 3)
        locker.execute("ROLLBACK")
        locker.close()
        assert outbox.wait_delivered(5)
        outbox.put(make_events(1, start=1))
        assert outbox.wait_delivered(5)
    assert [e.track_id for e in out.delivered] == [0, 1]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT delivered_seq FROM cursors WHERE output = 'hook'").fetchone() == (2,)


def test_a_dead_letter_keeps_its_event_when_delivered_ones_are_pruned(tmp_path):
    """The docs promise a dead letter is kept in the outbox: its event's JSON must outlive keep_delivered_s."""
    path = tmp_path / "outbox.db"
    refusing, given_up = RefusingOutput({1}), RecordingOutput("limited")
    given_up.max_retries = 0
    events = make_events(3)
    with Outbox(path, [refusing, given_up], backoff=FAST, keep_delivered_s=0.0) as outbox:
        outbox.put(events[:2])
        assert wait_until(lambda: outbox.stats()["rec"]["pending"] == 0 and len(given_up.delivered) == 2)
        given_up.failing.set()
        outbox.put(events[2:])
        assert outbox.wait_delivered(5)
        given_up.failing.clear()
        outbox.put(make_events(1, start=3))  # prunes what every output is past, older than 0 s
        assert outbox.wait_delivered(5)
    with sqlite3.connect(path) as db:
        dead = db.execute("SELECT d.output, e.body FROM dead_letters d JOIN events e USING (seq) ORDER BY seq").fetchall()
        stored = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert [(output, event_from_json(body)) for output, body in dead] == [("rec", events[1]), ("limited", events[2])]
    assert stored == 3  # the two dead letters' events and the newest; the delivered ones were pruned


def test_what_an_output_taken_out_left_is_counted_under_its_name_until_an_output_of_that_name_takes_it(tmp_path):
    """What a reload says an output left behind: the events after the cursor kept under its name."""
    down = RecordingOutput("hook")
    down.failing.set()
    outbox = Outbox(tmp_path / "outbox.db", [down], backoff=FAST)
    outbox.open()
    outbox.put(make_events(3))
    assert wait_until(lambda: down.attempts >= 2)
    outbox.remove_output("hook")
    assert outbox.undelivered("hook") == 3
    outbox.put(make_events(2, start=3))
    assert outbox.undelivered("hook") == 5  # stored after it left: still for an output of its name
    back = RecordingOutput("hook")
    outbox.add_output(back)
    assert wait_until(lambda: outbox.undelivered("hook") == 0)
    assert [e.track_id for e in back.delivered] == [0, 1, 2, 3, 4]
    assert outbox.undelivered("never-added") == 0
    assert outbox.close(timeout=5)


class _CancelledOnce(RecordingOutput):
    """Lets a CancelledError out once (an asyncio-based plugin output whose call was cancelled by a timeout)."""

    def deliver(self, event: Event) -> None:
        if self.attempts == 0:
            self.attempts += 1
            raise asyncio.CancelledError()
        super().deliver(event)


def test_an_output_raising_a_base_exception_is_retried_and_its_courier_goes_on(tmp_path):
    """CancelledError is not an Exception: it once ended the courier's thread, and the output got no event again."""
    out = _CancelledOnce()
    with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
        outbox.put(make_events(3))
        assert outbox.wait_delivered(5)
        outbox.put(make_events(2, start=3))
        assert outbox.wait_delivered(5)
        assert outbox.stats()["rec"]["failed"] == 1
    assert [e.track_id for e in out.delivered] == [0, 1, 2, 3, 4]


class QuotingOutput(RecordingOutput):
    """An output plugin whose failures quote the URL it posts to, as HTTP clients' errors do; gives up at once."""

    max_retries = 0

    def __init__(self, name: str, failure: BaseException):
        super().__init__(name)
        self.failure = failure

    def deliver(self, event: Event) -> None:
        raise self.failure


def test_an_output_s_failures_are_logged_and_kept_as_dead_letters_with_the_credentials_they_quote_masked(tmp_path):
    url = "https://ops:hunter2@hooks.example/v1/events?token=t0k3n"
    outputs = [QuotingOutput("a-refused", EventRefused(f"{url} answered 422")),
               QuotingOutput("b-down", SinkError(f"{url} unreachable")),
               QuotingOutput("c-bug", ConnectionError(f"Max retries exceeded with url: {url}"))]
    with configured_log("json") as out:
        with Outbox(tmp_path / "outbox.db", outputs, backoff=FAST) as outbox:
            outbox.put(make_events(1))
            assert outbox.wait_delivered(5)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        errors = [error for (error,) in db.execute("SELECT error FROM dead_letters ORDER BY output")]
    assert len(errors) == 3
    assert [s for s in ("hunter2", "t0k3n") if s in "\n".join([*errors, out.getvalue()])] == []
    # the traceback of an unexpected exception is in the JSON line's `exception`, as every other one's is
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [bug] = [line for line in lines if "raised ConnectionError" in line["message"]]
    assert bug["message"].startswith("output 'c-bug' raised ConnectionError on event ")
    assert bug["exception"].endswith("ConnectionError: Max retries exceeded with url: https://***@hooks.example/v1/"
                                     "events?token=***")
    masked = "https://***@hooks.example/v1/events?token=***"
    assert errors == [f"{masked} answered 422", f"{masked} unreachable",
                      f"ConnectionError: Max retries exceeded with url: {masked}"]
