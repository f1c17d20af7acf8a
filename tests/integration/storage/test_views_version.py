"""The views have a version of their own (`views.VIEWS_VERSION`): a database of the current schema version whose
views an older streamweave made gets this one's when a sink opens it, on a real SQLite file and a real PostgreSQL
server, and the views of the owner's own that read them stay."""
from __future__ import annotations

import time

from pipeline.sinks.storage import views
from pipeline.sinks.storage.answers import Filters, zone_stats
from pipeline.sinks.storage.query import ALL_RUNS, connect
from pipeline.sinks.storage.views import VIEWS_VERSION, view_statements
from pipeline.types import Event
from tests.integration.storage.replay import make_run, mot_results
from tests.integration.storage.test_runs import FIRST, SECOND, execute, store_run


def _event(name: str, kind: str, ts_ns: int, payload: dict) -> Event:
    return Event(event_id=name, run_id=FIRST, stream_id="cam-05", rule="dock", kind=kind, track_id=7, class_id=0,
                 ts_ns=ts_ns, wall_ns=time.time_ns(), payload=payload)


def _field_of_version_1(dialect: str, key: str, sql_type: str | None = None, table: str = "") -> str:
    if dialect == "sqlite":
        return f"json_extract({table}payload, '$.{key}')"
    value = f"({table}payload ->> '{key}')"
    return f"CAST({value} AS {sql_type})" if sql_type else value


def test_views_of_an_older_streamweave_are_replaced_and_a_plugin_field_of_another_type_reads_null(
        store, shared, tmp_path, monkeypatch):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    results = mot_results(gt, "cam-05", 14.0, time.time_ns(), FIRST)
    results[-1].events.extend([  # a visit of 2.5 s, and a plugin's event with text where numbers were
        _event("enter", "zone_enter", 10**9, {"zone": "dock"}),
        _event("exit", "zone_exit", 35 * 10**8, {"zone": "dock", "entered_ns": 10**9, "dwell_s": 2.5}),
        _event("plugin", "zone_exit", 4 * 10**9, {"zone": "dock", "entered_ns": "early", "dwell_s": "long"})])
    store_run(store, FIRST, results, tmp_path / "outbox.db")
    # the views version 1 had: a payload field cast as it is (PostgreSQL: an error for text that is no number)
    monkeypatch.setattr(views, "_field", _field_of_version_1)
    older = view_statements(store.kind)
    monkeypatch.undo()
    execute(store, [*older, "DELETE FROM streamweave_meta WHERE key = 'views_version'",
                    "CREATE VIEW my_exits AS SELECT event_id, dwell_s FROM events_named WHERE kind = 'zone_exit'"])

    sink = store.make(run=make_run(SECOND, time.time_ns()))
    sink.open()  # the views are replaced now
    sink.close()
    with connect(store.target) as (conn, _):
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'views_version'").fetchone()[0] == str(
            VIEWS_VERSION)
        exits = dict(conn.execute("SELECT event_id, dwell_s FROM my_exits").fetchall())  # the owner's view stays
    assert exits == {"exit": 2.5, "plugin": None}
    [visit] = zone_stats(store.target, Filters(run=ALL_RUNS))
    assert (visit["zone"], visit["visits"], visit["inside"], visit["max_dwell_s"]) == ("dock", 1, 0, 2.5)


def test_a_visit_on_a_stream_clock_of_19_digit_nanoseconds_ends(store, shared, tmp_path):
    """A stream whose clock counts from 1970 (a live fMP4 stream's decode times) has times of 19 digits in ns: an
    `entered_ns` of 19 digits read NULL on PostgreSQL, so its visit never ended there."""
    enter_ns = 1_733_500_000_123_456_789
    results = mot_results(shared("data/mot17/MOT17-05/gt/gt.txt"), "cam-05", 14.0, time.time_ns(), FIRST)[:3]
    results[-1].events.extend([
        _event("enter", "zone_enter", enter_ns, {"zone": "dock"}),
        _event("exit", "zone_exit", enter_ns + 25 * 10**8, {"zone": "dock", "entered_ns": enter_ns, "dwell_s": 2.5})])
    store_run(store, FIRST, results, tmp_path / "outbox.db")
    [visit] = zone_stats(store.target, Filters(run=ALL_RUNS))
    assert (visit["zone"], visit["visits"], visit["inside"], visit["max_dwell_s"]) == ("dock", 1, 0, 2.5)
