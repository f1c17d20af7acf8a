"""`run_pipeline.py query` and the SQL views behind it, on the demo's results in SQLite and PostgreSQL: the
answers add up to the events the demo delivered, run by run, bucket by bucket."""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.sinks.storage.answers import Filters, zone_counts
from pipeline.sinks.storage.cli import query_command
from pipeline.sinks.storage.query import ALL_RUNS, connect


def ask(*argv: str) -> str:
    out = io.StringIO()
    assert query_command([str(a) for a in argv], out) == 0
    return out.getvalue()


def ask_json(*argv: str):
    return json.loads(ask(*argv, "--format", "json"))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, demo_runs) -> str:
    return str(demo_runs.sqlite if request.param == "sqlite" else demo_runs.postgres)


def crossings(events: list[dict]) -> Counter:
    return Counter((e["run_id"], e["stream_id"], e["rule"], e["payload"]["direction"], e["class_name"])
                   for e in events if e["kind"] == "line_cross")


def counted(rows: list[dict], *keys: str, total: str) -> Counter:
    sums: Counter = Counter()
    for row in rows:
        sums[tuple(row[k] for k in keys)] += row[total]
    return sums


LINE_KEYS = ("run_id", "stream_id", "line", "direction", "class_name")


def test_line_counts_add_up_to_the_crossings_of_the_latest_run(db, demo_runs):
    latest = demo_runs.run_ids[-1]
    rows = ask_json("--db", db, "lines", "--bucket", "1d")
    assert {row["run_id"] for row in rows} == {latest}
    assert counted(rows, *LINE_KEYS, total="crossings") == crossings(demo_runs.logged(latest))


def test_each_run_is_reported_apart(db, demo_runs):
    first, second = demo_runs.run_ids
    assert [r["run_id"] for r in ask_json("--db", db, "runs", "--all-runs")] == [first, second]
    both = ask_json("--db", db, "lines", "--all-runs", "--bucket", "1d")
    assert counted(both, *LINE_KEYS, total="crossings") == crossings(demo_runs.logged())
    only_first = ask_json("--db", db, "lines", "--run", first, "--bucket", "1d")
    assert counted(only_first, *LINE_KEYS, total="crossings") == crossings(demo_runs.logged(first))


def test_zone_visits_and_dwell_come_from_the_zone_events(db, demo_runs):
    events = demo_runs.logged(demo_runs.run_ids[-1])
    visits = Counter((e["stream_id"], e["rule"], e["class_name"]) for e in events if e["kind"] == "zone_enter")
    dwells: dict[tuple, list[float]] = {}
    for e in events:
        if e["kind"] == "zone_exit":
            dwells.setdefault((e["stream_id"], e["rule"], e["class_name"]), []).append(e["payload"]["dwell_s"])
    rows = ask_json("--db", db, "zones")
    assert {(r["stream_id"], r["zone"], r["class_name"]): r["visits"] for r in rows} == dict(visits)
    for row in rows:
        ended = dwells[(row["stream_id"], row["zone"], row["class_name"])]
        assert row["inside"] == 0  # every visit closed when its stream ended
        assert (row["median_dwell_s"], row["max_dwell_s"]) == (round(statistics.median(ended), 3), max(ended))


def test_the_consoles_zone_counts_are_every_run_s_visits_added_up(db, demo_runs):
    events = demo_runs.logged()
    entered = Counter((e["stream_id"], e["rule"], e["class_name"]) for e in events if e["kind"] == "zone_enter")
    rows = zone_counts(db, Filters(run=ALL_RUNS))
    assert {(r["stream_id"], r["zone"], r["class_name"]): r["visits"] for r in rows} == dict(entered)
    assert all(r["inside"] == 0 for r in rows)  # every visit closed when its stream ended
    latest = zone_counts(db, Filters(run=demo_runs.run_ids[-1], streams=("cam-2",)))
    assert sum(r["visits"] for r in latest) == sum(n for (sid, *_), n in entered.items() if sid == "cam-2") // 2


def test_events_are_counted_by_kind_and_rule(db, demo_runs):
    events = demo_runs.logged(demo_runs.run_ids[-1])
    rows = ask_json("--db", db, "events", "--bucket", "1d")
    assert counted(rows, "stream_id", "kind", "rule", total="events") == Counter(
        (e["stream_id"], e["kind"], e["rule"]) for e in events)


def test_filters_narrow_by_stream_class_line_zone_and_host_time(db, demo_runs):
    events = demo_runs.logged(demo_runs.run_ids[-1])
    cars = ask_json("--db", db, "lines", "--stream", "cam-2", "--class", "car", "--class", "bus")
    expected = Counter({k: n for k, n in crossings(events).items() if k[1] == "cam-2" and k[4] in ("car", "bus")})
    assert counted(cars, *LINE_KEYS, total="crossings") == expected and expected
    gate = ask_json("--db", db, "lines", "--line", "street-eastbound", "--class", "car", "--bucket", "1d")
    assert {r["line"] for r in gate} == {"street-eastbound"} and sum(r["crossings"] for r in gate) == sum(
        n for k, n in crossings(events).items() if k[2] == "street-eastbound" and k[4] == "car")
    assert {r["zone"] for r in ask_json("--db", db, "zones", "--zone", "corner")} == {"corner"}
    first = min(e["wall_time"] for e in events)
    assert ask_json("--db", db, "events", "--until", first) == []  # before the first event: nothing
    since = counted(ask_json("--db", db, "events", "--since", first), "kind", total="events")
    assert since == Counter((e["kind"],) for e in events)


def test_buckets_are_local_to_the_time_zone(db, demo_runs):
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: quarter hours that are not UTC's

    def bucket(event: dict) -> str:
        local = datetime.fromtimestamp(event["wall_ns"] // 10**9, kolkata)
        return local.replace(minute=local.minute // 15 * 15, second=0).isoformat(timespec="minutes")

    events = [e for e in demo_runs.logged(demo_runs.run_ids[-1]) if e["kind"] == "line_cross"]
    rows = ask_json("--db", db, "lines", "--bucket", "15m", "--tz", "Asia/Kolkata")
    assert counted(rows, "line", "bucket", total="crossings") == Counter((e["rule"], bucket(e)) for e in events)
    assert all(row["bucket"].endswith("+05:30") for row in rows)
    days = ask_json("--db", db, "lines", "--bucket", "1d", "--tz", "Asia/Kolkata")
    assert {row["bucket"] for row in days} == {bucket(e)[:10] for e in events}


def test_the_views_answer_the_line_count_question_in_plain_sql(db, demo_runs):
    latest = demo_runs.run_ids[-1]
    events = [e for e in demo_runs.logged(latest) if e["kind"] == "line_cross" and e["class_name"] == "car"]
    line, day = events[0]["rule"], events[0]["wall_time"][:10]
    with connect(db) as (conn, p):
        found = dict(conn.execute(
            "SELECT direction, SUM(crossings) FROM line_counts "
            f"WHERE line = {p} AND class_name = 'car' AND day = {p} AND run_id = {p} GROUP BY direction",
            (line, day, latest)).fetchall())
        dwell = conn.execute(f"SELECT SUM(visits), MAX(max_dwell_s) FROM zone_dwell WHERE run_id = {p}",
                             (latest,)).fetchone()
        kinds = dict(conn.execute(f"SELECT kind, SUM(events) FROM event_counts WHERE run_id = {p} GROUP BY kind",
                                  (latest,)).fetchall())
    assert {d: int(n) for d, n in found.items()} == Counter(e["payload"]["direction"] for e in events
                                                            if e["rule"] == line and e["wall_time"][:10] == day)
    logged = demo_runs.logged(latest)
    exits = [e["payload"]["dwell_s"] for e in logged if e["kind"] == "zone_exit"]
    assert (int(dwell[0]), dwell[1]) == (len(exits), max(exits))
    assert {k: int(n) for k, n in kinds.items()} == Counter(e["kind"] for e in logged)


def test_the_config_names_the_storage_and_the_answer_reads_as_a_table_or_csv(demo_runs):
    latest = demo_runs.run_ids[-1]
    table = ask(demo_runs.config)  # the summary: the config's first storage sink is the SQLite file
    assert table.startswith(f"run {latest}: ")
    for title in ("Line crossings (per 1h, UTC)", "Zone visits (dwell in seconds)", "Events (per 1h, UTC)"):
        assert title in table
    assert "street-eastbound" in table and "crosswalk" in table and latest not in table.split("\n", 1)[1]
    rows = list(csv.DictReader(io.StringIO(ask(demo_runs.config, "zones", "--format", "csv"))))
    as_json = ask_json(demo_runs.config, "zones")
    assert rows == [{k: "" if v is None else str(v) for k, v in row.items()} for row in as_json]
    sections = ask_json(demo_runs.config, "--all-runs")
    assert list(sections) == ["runs", "lines", "zones", "events"] and len(sections["runs"]) == 2


def test_a_run_or_database_that_is_not_there_is_named_with_what_to_do(demo_runs, tmp_path, capsys):
    assert query_command(["--db", str(demo_runs.sqlite), "--run", "20200101T000000.000Z-00000000"]) == 1
    assert "runs --all-runs" in capsys.readouterr().err
    assert query_command(["--db", str(tmp_path / "none.db"), "lines"]) == 1
    assert "no stored results" in capsys.readouterr().err
    assert query_command(["--db", str(demo_runs.sqlite), "--bucket", "7m"]) == 2
    assert "divide a day" in capsys.readouterr().err
