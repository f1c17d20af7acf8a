"""Runs in storage, on a real SQLite file and a real PostgreSQL server: a second run of the same file is a
second run with its own rows, queries pick the latest run or the ones named, and databases of older versions
(before runs, before named events) are upgraded."""
from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from contextlib import closing
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import SinkError
from pipeline.sinks.storage import query
from pipeline.sinks.storage.answers import Buckets, Filters, event_counts
from pipeline.sinks.storage.query import ALL_RUNS, connect
from pipeline.sinks.storage.cli import query_command
from pipeline.sinks.storage.schema import BEFORE_RUNS, SCHEMA_VERSION
from pipeline.sinks.storage.views import VIEWS, view_statements
from pipeline.types import Event
from tests.integration.storage.replay import MOT_CLASSES, deliver_events, feed, make_run, mot_results, sqlite_store

FIRST, SECOND = "20250101T000000.000Z-00000001", "20250101T000100.000Z-00000002"


def store_run(store, run_id: str, results, outbox, instance: str = "") -> None:
    sink = store.make(run=make_run(run_id, time.time_ns(), instance), batch_size=500, flush_interval_s=0.05)
    sink.open()
    feed(sink, results)
    deliver_events(sink, results, outbox)
    sink.close()


def test_a_second_run_of_the_same_file_is_a_second_run_with_its_own_rows(store, shared, tmp_path):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    runs = {run_id: mot_results(gt, "cam-05", 14.0, time.time_ns(), run_id) for run_id in (FIRST, SECOND)}
    for run_id, results in runs.items():
        store_run(store, run_id, results, tmp_path / "outbox.db")  # one outbox, as for one installation
    one = runs[FIRST]
    classes = Counter(MOT_CLASSES[c] for r in one for c in r.detections.class_id.tolist())
    per_track = Counter(t for r in one for t in r.detections.track_id.tolist())
    rows = sum(len(r.detections) for r in one)

    listed = query.runs(store.target)
    assert [r["run_id"] for r in listed] == [SECOND, FIRST]  # newest first
    assert all(r["ended_ns"] >= r["started_ns"] and r["config_hash"] == "0123456789abcdef" for r in listed)
    for run_id in (None, FIRST, SECOND):  # None: the latest
        assert query.counts_by_stream_and_class(store.target, run=run_id) == {"cam-05": dict(classes)}
        tracks = query.tracks(store.target, "cam-05", run=run_id)
        assert {t["track_id"]: t["frames"] for t in tracks} == dict(per_track)  # frames of one run, never summed
        assert len(query.detections_for_stream(store.target, "cam-05", run=run_id)) == rows
    both = query.counts_by_stream_and_class(store.target, run=[FIRST, SECOND])
    assert both == query.counts_by_stream_and_class(store.target, run=ALL_RUNS) == {
        "cam-05": {name: 2 * n for name, n in classes.items()}}
    assert Counter(t["run_id"] for t in query.tracks(store.target, "cam-05", run=ALL_RUNS)) == {
        FIRST: len(per_track), SECOND: len(per_track)}

    events = query.events(store.target, run=ALL_RUNS)  # same tracks, same stream times: no id collides
    assert len(events) == len({e.event_id for e in events}) == 2 * sum(len(r.events) for r in one)
    for run_id, results in runs.items():
        made = {e.event_id for r in results for e in r.events}
        assert {e.event_id for e in query.events(store.target, run=run_id)} == made


def test_query_answers_for_the_runs_of_one_instance(store, shared, tmp_path, capsys):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    for run_id, instance in ((FIRST, "edge-1"), (SECOND, "edge-2")):
        results = mot_results(gt, "cam-05", 14.0, time.time_ns(), run_id)
        for result in results:
            result.events[:] = [replace(e, instance=instance) for e in result.events]
        store_run(store, run_id, results, tmp_path / f"outbox-{instance}.db", instance=instance)

    capsys.readouterr()
    assert query_command(["--db", str(store.target), "runs", "--instance", "edge-1", "--format", "json"]) == 0
    assert [(r["run_id"], r["instance"]) for r in json.loads(capsys.readouterr().out)] == [(FIRST, "edge-1")]
    assert query_command(["--db", str(store.target), "runs", "--all-runs", "--format", "json"]) == 0
    assert [r["instance"] for r in json.loads(capsys.readouterr().out)] == ["edge-1", "edge-2"]
    assert query_command(["--db", str(store.target), "events", "--instance", "edge-1", "--format", "json"]) == 0
    assert {r["run_id"] for r in json.loads(capsys.readouterr().out)} == {FIRST}  # not the latest run: edge-2's
    assert query_command(["--db", str(store.target), "--instance", "edge-9"]) == 1
    assert "no such run" in capsys.readouterr().err


def test_the_hour_repeated_when_clocks_go_back_is_two_buckets(store):
    def ns(utc: str) -> int:
        return int(datetime.fromisoformat(utc).timestamp()) * 10**9

    # 2025-10-26 in Paris: 02:00-03:00 summer time (00:00-01:00 UTC), then 02:00-03:00 again in winter time
    sink = store.make(run=make_run(FIRST, ns("2025-10-26T00:00:00+00:00")))
    sink.open()
    for i, utc in enumerate(("2025-10-26T00:30:00+00:00", "2025-10-26T00:40:00+00:00", "2025-10-26T01:30:00+00:00")):
        sink.event_output.deliver(Event(f"event-{i}", FIRST, "cam-05", "gate", "line_cross", i, 2, i * 10**9, ns(utc),
                                        {"line": "gate", "direction": "in"}, "car"))
    sink.event_output.close()
    sink.close()

    paris, utc = Buckets(60, ZoneInfo("Europe/Paris")), Buckets(60, ZoneInfo("UTC"))
    assert [(row["bucket"], row["events"]) for row in event_counts(store.target, Filters(), paris)] == [
        ("2025-10-26T02:00+02:00", 2), ("2025-10-26T02:00+01:00", 1)]
    assert [(row["bucket"], row["events"]) for row in event_counts(store.target, Filters(), utc)] == [
        ("2025-10-26T00:00+00:00", 2), ("2025-10-26T01:00+00:00", 1)]


_VERSION_1 = """
CREATE TABLE streams (stream_id TEXT PRIMARY KEY, url TEXT, first_seen_ns {int} NOT NULL, last_seen_ns {int} NOT NULL);
CREATE TABLE detections (stream_id TEXT NOT NULL, seq {int} NOT NULL, pts_ns {int} NOT NULL, wall_ns {int} NOT NULL,
    class_id INTEGER NOT NULL, class_name TEXT NOT NULL, score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL, track_id {int} NOT NULL);
CREATE TABLE tracks (stream_id TEXT NOT NULL, track_id {int} NOT NULL, class_id INTEGER NOT NULL,
    first_pts_ns {int} NOT NULL, last_pts_ns {int} NOT NULL, frames {int} NOT NULL, last_wall_ns {int} NOT NULL,
    PRIMARY KEY (stream_id, track_id));
CREATE TABLE events (event_id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,
    track_id {int} NOT NULL, class_id INTEGER NOT NULL, ts_ns {int} NOT NULL, payload {json} NOT NULL,
    wall_ns {int} NOT NULL);
CREATE INDEX detections_stream_pts ON detections (stream_id, pts_ns);
CREATE INDEX detections_stream_track ON detections (stream_id, track_id);
CREATE TABLE streamweave_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO streamweave_meta VALUES ('schema_version', '1');
INSERT INTO detections VALUES ('cam-05', 0, 0, 1000, 0, 'pedestrian', 0.9, 1, 2, 3, 4, 1);
INSERT INTO detections VALUES ('cam-05', 1, 71428571, 2000, 0, 'pedestrian', 0.9, 1, 2, 3, 4, 1);
INSERT INTO tracks VALUES ('cam-05', 1, 0, 0, 71428571, 2, 2000);
INSERT INTO events VALUES ('old-event', 'cam-05', 'all', 'enter', 1, 0, 0, '{{"zone": "all"}}', 1000)
"""


def written_before_runs(store) -> None:
    """The store's database as a version without runs left it: its schema, and a track with an event."""
    types = {"int": "INTEGER", "json": "TEXT"} if store.kind == "sqlite" else {"int": "BIGINT", "json": "JSONB"}
    execute(store, _VERSION_1.format(**types).split(";"))


def execute(store, statements: list[str]) -> None:
    if store.kind == "sqlite":
        with closing(sqlite3.connect(store.target, isolation_level=None)) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    with connect(store.target) as (conn, _):
        for statement in statements:
            conn.execute(statement)


def test_a_database_from_before_runs_is_upgraded_and_keeps_its_rows_as_one_run(store, shared, tmp_path):
    written_before_runs(store)
    results = mot_results(shared("data/mot17/MOT17-05/gt/gt.txt"), "cam-05", 14.0, time.time_ns(), SECOND)
    store_run(store, SECOND, results, tmp_path / "outbox.db")

    assert [r["run_id"] for r in query.runs(store.target)] == [SECOND, BEFORE_RUNS]
    assert query.counts_by_stream_and_class(store.target, run=BEFORE_RUNS) == {"cam-05": {"pedestrian": 2}}
    assert query.tracks(store.target, "cam-05", run=BEFORE_RUNS) == [
        {"run_id": BEFORE_RUNS, "track_id": 1, "class_id": 0, "first_pts_ns": 0, "last_pts_ns": 71428571, "frames": 2}]
    assert [e.event_id for e in query.events(store.target, run=BEFORE_RUNS)] == ["old-event"]
    assert {t["track_id"]: t["frames"] for t in query.tracks(store.target, "cam-05")}[1] == sum(
        r.detections.track_id.tolist().count(1) for r in results)  # track 1 of the new run: not added to the old
    with connect(store.target) as (conn, _):
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)


_WITHOUT_VERSION_4 = ["DROP TABLE track_boxes", "ALTER TABLE detections DROP COLUMN frame_index",
                      "ALTER TABLE detections DROP COLUMN epoch"]
_WITHOUT_VERSION_5 = [*(f"DROP VIEW IF EXISTS {view}" for view in reversed(VIEWS)), "DROP INDEX runs_instance_started",
                      "ALTER TABLE runs DROP COLUMN instance", "ALTER TABLE events DROP COLUMN instance"]


def as_version_2(store) -> None:
    """The store's database as version 2 left it: events without names, no views, detections without their
    frames' places in the source, no track boxes."""
    statements = [*_WITHOUT_VERSION_5,
                  *(f"ALTER TABLE events DROP COLUMN {column}" for column in ("class_name", "snapshot", "clip")),
                  *_WITHOUT_VERSION_4, "UPDATE streamweave_meta SET value = '2' WHERE key = 'schema_version'"]
    execute(store, statements)


def test_a_database_of_version_2_gets_named_events_and_the_views(store, shared, tmp_path):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    store_run(store, FIRST, mot_results(gt, "cam-05", 14.0, time.time_ns(), FIRST), tmp_path / "outbox.db")
    as_version_2(store)
    assert query_command(["--db", str(store.target)]) == 1  # read as it is: it says to upgrade it first
    results = mot_results(gt, "cam-05", 14.0, time.time_ns(), SECOND)
    for result in results:
        result.events[:] = [replace(e, class_name=MOT_CLASSES[e.class_id]) for e in result.events]
    store_run(store, SECOND, results, tmp_path / "outbox.db")

    with connect(store.target) as (conn, p):
        names = dict(conn.execute("SELECT run_id, COUNT(DISTINCT class_name) FROM events_named GROUP BY run_id")
                     .fetchall())
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
    assert names == {FIRST: 0, SECOND: 1}  # the old rows have no names (NULL); the new ones have theirs
    assert {e.class_name for e in query.events(store.target, run=SECOND)} == {"pedestrian"}
    assert query_command(["--db", str(store.target), "--all-runs"]) == 0


def test_a_database_of_version_3_gets_the_frames_places_and_track_boxes(store, shared, tmp_path):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    store_run(store, FIRST, mot_results(gt, "cam-05", 14.0, time.time_ns(), FIRST), tmp_path / "outbox.db")
    execute(store, [*_WITHOUT_VERSION_5, *_WITHOUT_VERSION_4,
                    "UPDATE streamweave_meta SET value = '3' WHERE key = 'schema_version'"])
    store_run(store, SECOND, mot_results(gt, "cam-05", 14.0, time.time_ns(), SECOND), tmp_path / "outbox.db")

    with connect(store.target) as (conn, _):
        places = dict(conn.execute("SELECT run_id, MAX(frame_index) FROM detections GROUP BY run_id").fetchall())
        assert conn.execute("SELECT COUNT(*) FROM track_boxes").fetchone()[0] == 0
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
    assert places == {FIRST: -1, SECOND: 836}  # unknown in the old rows; MOT17-05's last frame in the new
    assert query_command(["--db", str(store.target), "--all-runs"]) == 0


def test_a_database_of_version_4_gets_the_instances_of_runs_and_events(store, shared, tmp_path):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    first = mot_results(gt, "cam-05", 14.0, time.time_ns(), FIRST)
    store_run(store, FIRST, first, tmp_path / "outbox.db")
    execute(store, [*_WITHOUT_VERSION_5, "UPDATE streamweave_meta SET value = '4' WHERE key = 'schema_version'"])
    second = mot_results(gt, "cam-05", 14.0, time.time_ns(), SECOND)
    for result in second:
        result.events[:] = [replace(e, instance="edge-2") for e in result.events]
    store_run(store, SECOND, second, tmp_path / "outbox.db", instance="edge-2")

    assert {r["run_id"]: r["instance"] for r in query.runs(store.target)} == {FIRST: None, SECOND: "edge-2"}
    assert {e.instance for e in query.events(store.target, run=FIRST)} == {None}  # unknown in the old rows
    assert {e.instance for e in query.events(store.target, run=SECOND)} == {"edge-2"}
    with connect(store.target) as (conn, _):
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
        assert conn.execute("SELECT COUNT(*) FROM events_named WHERE instance = 'edge-2'").fetchone()[0] == sum(
            len(r.events) for r in second)


def test_a_database_of_a_newer_version_is_refused_naming_it(tmp_path):
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE streamweave_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO streamweave_meta VALUES ('schema_version', '99')")
    sink = sqlite_store(path).make()
    with pytest.raises(SinkError, match=r"newer.db' has schema version 99, written by a newer streamweave"):
        sink.open()


def test_a_database_whose_owner_reads_its_views_in_views_of_their_own_is_upgraded_or_says_what_to_do(store, shared,
                                                                                                   tmp_path):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    store_run(store, FIRST, mot_results(gt, "cam-05", 14.0, time.time_ns(), FIRST), tmp_path / "outbox.db")
    version_4_views = [sql.replace(", instance\nFROM events", "\nFROM events") for sql in view_statements(store.kind)]
    execute(store, [*_WITHOUT_VERSION_5, *version_4_views,
                    "UPDATE streamweave_meta SET value = '4' WHERE key = 'schema_version'",
                    "CREATE VIEW my_daily AS SELECT day, SUM(crossings) AS n FROM line_counts GROUP BY day"])
    sink = store.make(run=make_run(SECOND, time.time_ns()))
    if store.kind == "postgres":  # PostgreSQL keeps a view from being dropped under another
        with pytest.raises(SinkError, match=r"cannot upgrade its views .*my_daily.*; drop those views, start once"):
            sink.open()
        return
    sink.open()  # SQLite lets the views be made again under the owner's
    sink.close()
    with connect(store.target) as (conn, _):
        assert conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
        conn.execute("SELECT * FROM my_daily").fetchall()
