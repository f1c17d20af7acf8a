"""Storage sinks on real databases (a SQLite file and a throw-away PostgreSQL server), fed with
MOT17-05 ground truth replayed as tracked detections."""
from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest

from pipeline.backoff import Backoff
from pipeline.errors import SinkError
from pipeline.sinks.outbox import Outbox
from pipeline.sinks.storage import query
from pipeline.sinks.storage.query import ALL_RUNS, connect
from tests.integration.storage.replay import (
    RUN,
    deliver_events,
    feed,
    as_tracked,
    make_run,
    mot_results,
    postgres_store,
    sqlite_store,
)
from tests.support.postgres import free_port
from tests.support.waiting import wait_until

DAY_NS = 86_400 * 10**9
OTHER = "20250101T000100.000Z-00000002"


def test_every_detection_track_and_event_lands_in_storage(store, mot17_05, tmp_path):
    sink = store.make(batch_size=500, flush_interval_s=0.2)
    sink.open()
    feed(sink, mot17_05)
    deliver_events(sink, mot17_05, tmp_path / "outbox.db")
    sink.close()

    boxes = [(r.frame.pts_ns, t) for r in mot17_05 for t in r.detections.track_id.tolist()]
    assert query.counts_by_stream_and_class(store.target) == {
        "cam-05": dict(Counter(sink.class_names[c] for r in mot17_05 for c in r.detections.class_id.tolist()))
    }
    per_track = Counter(t for _, t in boxes)
    stored = {t["track_id"]: t for t in query.tracks(store.target, "cam-05")}
    assert {t: s["frames"] for t, s in stored.items()} == dict(per_track)
    for tid, summary in stored.items():
        times = [pts for pts, t in boxes if t == tid]
        assert (summary["first_pts_ns"], summary["last_pts_ns"]) == (min(times), max(times))
    events = query.events(store.target, stream_id="cam-05", kind="enter")
    assert events == sorted((e for r in mot17_05 for e in r.events), key=lambda e: (e.ts_ns, e.event_id))
    (kept,) = {e.class_id for e in events}
    assert query.recent_events(store.target, class_ids=[kept + 1]) == []
    both = query.recent_events(store.target, class_ids=[kept + 1, kept], limit=len(events))  # a name two ids share
    assert len(both) == len(events)
    (stream,) = query.streams(store.target)
    assert stream["url"] == "rtsp://***@10.0.0.5/live"
    assert stream["first_seen_ns"] == mot17_05[0].frame.wall_ns and stream["last_seen_ns"] == mot17_05[-1].frame.wall_ns


def test_detections_read_back_as_arrays_equal_to_what_was_stored(store, mot17_05):
    sink = store.make()
    sink.open()
    feed(sink, mot17_05[:200])
    sink.close()

    got = query.detections_for_stream(store.target, "cam-05", start_pts_ns=0, end_pts_ns=mot17_05[100].frame.pts_ns)
    rows = [
        (r.frame.pts_ns, r.frame.seq, float(-r.detections.score[i]), *r.detections.xyxy[i].tolist(),
         int(r.detections.class_id[i]), int(r.detections.track_id[i]))
        for r in mot17_05[:100] for i in range(len(r.detections))
    ]
    rows.sort(key=lambda row: row[:5])
    expected = np.array(rows)
    assert len(got) == len(rows) > 0
    assert got.pts_ns.dtype == np.int64 and got.xyxy.dtype == np.float32 and got.xyxy.shape == (len(rows), 4)
    np.testing.assert_array_equal(got.pts_ns, expected[:, 0].astype(np.int64))
    np.testing.assert_array_equal(got.xyxy, expected[:, 3:7].astype(np.float32))
    np.testing.assert_array_equal(got.score, (-expected[:, 2]).astype(np.float32))
    np.testing.assert_array_equal(got.track_id, expected[:, 8].astype(np.int64))


def test_a_tracks_sink_stores_the_trackers_boxes_and_an_events_sink_no_rows_per_frame(store, shared, mot17_05, tmp_path):
    results = mot17_05[:300]
    predictions = as_tracked(results)
    sink = store.make(what="tracks")
    sink.open()
    feed(sink, results)
    sink.close()
    other = mot_results(shared("data/mot17/MOT17-05/gt/gt.txt"), "cam-05", 14.0, time.time_ns(), OTHER)[:150]
    events_only = store.make(run=make_run(OTHER, time.time_ns()), what="events")
    events_only.open()
    feed(events_only, other)
    deliver_events(events_only, other, tmp_path / "outbox.db")
    events_only.close()

    rows = query.select_rows(store.target, "SELECT frame_index, track_id, score, x1, coasted FROM track_boxes "
                                           "WHERE run_id = ?", (RUN.run_id,))
    expected = [(r.frame.index, tid, score, x1, coasted) for r in results for tid, score, x1, coasted in
                zip(r.tracks.track_id.tolist(), r.tracks.score, r.tracks.xyxy[:, 0], r.coasted().tolist())]
    f32 = np.float32  # PostgreSQL's REAL is a float32, as the columns are
    assert sorted((i, t, f32(s), f32(x), bool(c)) for i, t, s, x, c in rows) == sorted(expected)
    assert sorted((i, t) for i, t, s, _, c in rows if c and s == 0) == sorted(predictions) and len(predictions) > 20
    assert query.counts_by_stream_and_class(store.target, run=ALL_RUNS) == {}  # no detection rows in either run
    matched = Counter(t for r in results for t in r.detections.track_id.tolist())  # frames with a detection
    assert {t["track_id"]: t["frames"] for t in query.tracks(store.target, "cam-05", run=RUN.run_id)} == dict(matched)
    assert query.tracks(store.target, "cam-05", run=OTHER) == []
    assert query.select_rows(store.target, "SELECT COUNT(*) FROM track_boxes WHERE run_id = ?", (OTHER,)) == [(0,)]
    assert len(query.events(store.target, run=OTHER)) == sum(len(r.events) for r in other) > 0


def test_many_frames_are_written_in_few_transactions(store, mot17_05):
    sink = store.make(batch_size=1000, flush_interval_s=30.0)
    sink.open()
    feed(sink, mot17_05)
    sink.close()
    rows = sum(max(1, len(r.detections)) for r in mot17_05)
    stats = sink.stats()
    assert stats["rows_written"] == rows and stats["items_written"] == len(mot17_05)
    batches = stats["transactions"] - 2  # and the run's start and end
    assert 2 <= batches <= rows // 1000 + 1  # every batch but the last holds >= 1000 rows


def test_duplicate_events_are_stored_once(store, mot17_05, tmp_path):
    with_events = [r for r in mot17_05 if r.events]
    for attempt in range(2):  # at-least-once delivery: the same events arrive twice (two outboxes: no dedup there)
        sink = store.make(flush_interval_s=0.05)
        sink.open()
        deliver_events(sink, with_events, tmp_path / f"outbox-{attempt}.db")
        sink.close()
    stored = query.events(store.target)
    assert len(stored) == sum(len(r.events) for r in with_events)
    assert len({e.event_id for e in stored}) == len(stored)


def test_an_event_with_a_nul_character_is_stored_with_it_replaced_and_the_next_events_too(store, mot17_05, tmp_path):
    with_events = [r for r in mot17_05 if r.events][:5]
    first = with_events[0].events[0]
    with_events[0].events[0] = replace(first, payload={**first.payload, "plate": "AB\x00C"})  # PostgreSQL holds no NUL
    sink = store.make(flush_interval_s=0.05)
    sink.open()
    deliver_events(sink, with_events, tmp_path / "outbox.db")
    sink.close()
    stored = {event.event_id: event for event in query.events(store.target)}
    assert len(stored) == sum(len(r.events) for r in with_events)
    assert stored[first.event_id].payload["plate"] == "AB\ufffdC"


def test_close_flushes_rows_still_queued(store, mot17_05):
    sink = store.make(batch_size=100_000, flush_interval_s=60.0)
    sink.open()
    feed(sink, mot17_05[:300])
    time.sleep(0.2)
    assert query.counts_by_stream_and_class(store.target) == {}
    sink.close()
    stored = sum(query.counts_by_stream_and_class(store.target)["cam-05"].values())
    assert stored == sum(len(r.detections) for r in mot17_05[:300])


def test_retention_deletes_rows_older_than_retention_days(store, shared, tmp_path):
    results = mot_results(shared("data/mot17/MOT17-05/gt/gt.txt"), "cam-05", 14.0, time.time_ns() - 10 * DAY_NS,
                          RUN.run_id)  # captured 10 days ago ...
    old, new = results[:400], results[400:]
    for r in new:  # ... up to frame 400, and now from there on, events included
        r.frame.wall_ns += 10 * DAY_NS
        r.events[:] = [r.moment.event(e.rule, e.kind, e.track_id, e.class_id, e.payload) for e in r.events]
    sink = store.make()
    sink.open()
    feed(sink, results)
    deliver_events(sink, results, tmp_path / "outbox.db")
    sink.close()
    sink = store.make(retention_days=1.0, retention_chunk_rows=1000)
    sink.open()  # retention runs at start, a chunk at a time, then every retention_interval_s
    assert wait_until(lambda: sink.stats()["retention_passes"] == 1, timeout=10)
    sink.close()

    assert sink.stats()["rows_deleted"] > 1000
    got = query.detections_for_stream(store.target, "cam-05")
    assert len(got) == sum(len(r.detections) for r in new)
    assert got.pts_ns.min() == min(r.frame.pts_ns for r in new if len(r.detections))
    kept_events = {e.event_id for e in query.events(store.target)}
    assert kept_events == {e.event_id for r in new for e in r.events}


def test_a_retention_step_deletes_at_most_a_chunk_and_the_steps_delete_the_whole_backlog(store, shared):
    gt = shared("data/mot17/MOT17-05/gt/gt.txt")
    old = mot_results(gt, "cam-old", 14.0, time.time_ns() - 10 * DAY_NS, RUN.run_id)
    new = mot_results(gt, "cam-05", 14.0, time.time_ns(), RUN.run_id)[:100]
    sink = store.make(batch_size=1000)
    sink.open()
    feed(sink, old + new)
    sink.close()
    expired = sum(len(r.detections) for r in old) + len(query.tracks(store.target, "cam-old"))
    backend = type(sink.backend)(store.target)
    backend.connect()
    cutoff = time.time_ns() - DAY_NS
    steps = [backend.delete_older_than(cutoff, 1000)]
    while steps[-1] == 1000:
        steps.append(backend.delete_older_than(cutoff, 1000))
    backend.close()

    assert len(steps) == expired // 1000 + 1 and sum(steps) == expired  # each a transaction of <= 1000 rows
    assert query.counts_by_stream_and_class(store.target).keys() == {"cam-05"}
    assert len(query.detections_for_stream(store.target, "cam-05")) == sum(len(r.detections) for r in new)


def test_a_retention_chunk_is_at_least_two_batches_so_deleting_outpaces_writing_under_load(tmp_path):
    sink = sqlite_store(tmp_path / "load.db").make(batch_size=5000, retention_chunk_rows=1000)
    assert sink.retention_chunk_rows == 10_000  # one step between two batches deletes twice what a batch writes


def test_sqlite_database_is_in_wal_mode(tmp_path, mot17_05):
    store = sqlite_store(tmp_path / "wal.db")
    sink = store.make()
    sink.open()
    feed(sink, mot17_05[:50])
    sink.close()
    with sqlite3.connect(store.target) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_and_postgres_give_the_same_query_results(tmp_path, postgres_dsn, mot17_05):
    stores = [sqlite_store(tmp_path / "same.db"), postgres_store(postgres_dsn)]
    for store in stores:
        sink = store.make(batch_size=256)
        sink.open()
        feed(sink, mot17_05)
        deliver_events(sink, mot17_05, tmp_path / f"outbox-{store.kind}.db")
        sink.close()
    lite, pg = (s.target for s in stores)
    assert query.counts_by_stream_and_class(lite) == query.counts_by_stream_and_class(pg)
    a, b = query.detections_for_stream(lite, "cam-05"), query.detections_for_stream(pg, "cam-05")
    for column in ("pts_ns", "seq", "xyxy", "class_id", "score", "track_id"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)
    assert query.tracks(lite, "cam-05") == query.tracks(pg, "cam-05")
    assert query.events(lite) == query.events(pg)
    assert query.streams(lite) == query.streams(pg)
    started = [[(r["run_id"], r["config_hash"], r["version"], r["started_ns"]) for r in query.runs(t)] for t in (lite, pg)]
    assert started[0] == started[1]  # each recorded its own end


@pytest.mark.fault
def test_postgres_restart_mid_run_loses_no_rows(postgres_server, postgres_dsn, mot17_05, tmp_path):
    sink = postgres_store(postgres_dsn).make(batch_size=200, flush_interval_s=0.05, put_timeout_s=30.0)
    sink.open()
    half = len(mot17_05) // 2
    feed(sink, mot17_05[:half])
    assert wait_until(lambda: sink.stats()["items_written"] == half, timeout=10)
    postgres_server.stop("fast")
    feed(sink, mot17_05[half:])
    assert wait_until(lambda: sink.stats()["retries"] >= 2, timeout=10)
    postgres_server.start()
    sink.close()

    assert sink.stats()["rows_lost"] == 0 and sink.backend.reconnects >= 1
    got = query.detections_for_stream(postgres_dsn, "cam-05")
    assert len(got) == sum(len(r.detections) for r in mot17_05)


@pytest.mark.fault
def test_events_wait_in_the_outbox_while_postgres_is_down_and_are_stored_once_it_is_back(
        postgres_server, postgres_dsn, mot17_05, tmp_path):
    sink = postgres_store(postgres_dsn).make()
    sink.open()
    events = [e for r in mot17_05 for e in r.events]
    postgres_server.stop("fast")
    with Outbox(tmp_path / "outbox.db", [sink.event_output], backoff=Backoff(0.05, 0.2)) as outbox:
        outbox.put(events)
        assert wait_until(lambda: outbox.stats()[sink.name]["failed"] >= 2, timeout=10)
        assert outbox.stats()[sink.name]["pending"] == len(events)
        postgres_server.start()
        assert outbox.wait_delivered(60)
    sink.close()
    in_order = sorted(events, key=lambda e: (e.ts_ns, e.event_id))
    assert [e.event_id for e in query.events(postgres_dsn)] == [e.event_id for e in in_order]


@pytest.mark.fault
def test_on_frame_raises_sink_error_once_postgres_is_down_and_the_queue_is_full(postgres_server, postgres_dsn, mot17_05):
    sink = postgres_store(postgres_dsn).make(batch_size=50, flush_interval_s=0.01, queue_size=20, put_timeout_s=0.2)
    sink.open()
    postgres_server.stop("fast")
    accepted = 0
    with pytest.raises(SinkError, match=r"frames waiting \(its output down\); this frame.s rows are not stored"):
        for result in mot17_05:
            sink.on_frame(result)
            accepted += 1
    assert accepted < 100  # bounded: the queue plus the batch being retried
    postgres_server.start()
    sink.close()
    assert sink.stats()["put_timeouts"] == 1 and sink.stats()["rows_lost"] == 0
    assert len(query.detections_for_stream(postgres_dsn, "cam-05")) == sum(len(r.detections) for r in mot17_05[:accepted])


_WRITER_SESSIONS = ("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'streamweave storage'")


@pytest.mark.fault
def test_rows_are_kept_while_postgres_is_read_only_and_stored_once_it_takes_writes_again(postgres_dsn, mot17_05):
    frames = mot17_05[:100]
    sink = postgres_store(postgres_dsn).make(flush_interval_s=0.01, put_timeout_s=30.0)
    sink.open()
    with connect(postgres_dsn) as (admin, _):
        database = admin.info.dbname
        # As after a failover to a standby, or on a server read-only for maintenance: the writer reconnects to it.
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        admin.execute(_WRITER_SESSIONS.replace("COUNT(*)", "pg_terminate_backend(pid)"))
        assert wait_until(lambda: admin.execute(_WRITER_SESSIONS).fetchone()[0] == 0, timeout=10)
        feed(sink, frames)
        assert wait_until(lambda: sink.stats()["retries"] >= 3 or sink.stats()["rows_rejected"] > 0, timeout=10)
        admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    sink.close()

    assert sink.stats()["rows_rejected"] == 0 and sink.stats()["rows_lost"] == 0
    assert len(query.detections_for_stream(postgres_dsn, "cam-05")) == sum(len(r.detections) for r in frames)


@pytest.mark.fault
def test_rows_are_kept_while_postgres_refuses_the_writer_its_privilege_and_stored_once_it_is_granted(
        postgres_dsn, mot17_05):
    frames = mot17_05[:100]
    role = f"writer_{uuid.uuid4().hex[:12]}"
    with connect(postgres_dsn) as (admin, _):
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
            sink = postgres_store(postgres_dsn.replace("postgres@", f"{role}@", 1)).make(flush_interval_s=0.01,
                                                                                     put_timeout_s=30.0)
            sink.open()
            admin.execute(f"REVOKE INSERT ON detections FROM {role}")
            feed(sink, frames)
            assert wait_until(lambda: sink.stats()["retries"] >= 2 or sink.stats()["rows_rejected"] > 0, timeout=10)
            admin.execute(f"GRANT INSERT ON detections TO {role}")
            sink.close()
            assert sink.stats()["rows_rejected"] == 0 and sink.stats()["rows_lost"] == 0
            assert len(query.detections_for_stream(postgres_dsn, "cam-05")) == sum(len(r.detections) for r in frames)
        finally:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_rows_a_postgres_schema_cannot_take_are_refused_at_once_not_retried_for_ever(postgres_dsn, mot17_05):
    frames = mot17_05[:20]
    sink = postgres_store(postgres_dsn).make(flush_interval_s=0.01, put_timeout_s=30.0)
    sink.open()
    with connect(postgres_dsn) as (admin, _):
        admin.execute("ALTER TABLE detections RENAME COLUMN epoch TO epoch_of_another_version")
    feed(sink, frames)
    sink.close()  # nothing left waiting: each refused frame was dropped and counted
    stats = sink.stats()
    assert stats["rows_rejected"] == sum(len(r.detections) for r in frames) and stats["rows_lost"] == 0
    assert stats["retries"] == 0


def test_a_frame_the_database_refuses_is_dropped_alone_not_with_the_other_frames_of_its_batch(tmp_path, mot17_05):
    frames = mot17_05[:100]
    bad = frames[50]
    bad.detections.xyxy[0, 0] = np.nan  # NaN is stored as NULL by SQLite: a NOT NULL column refuses it
    sink = sqlite_store(tmp_path / "nan.db").make(batch_size=100_000, flush_interval_s=60.0)  # one batch, at close
    sink.open()
    feed(sink, frames)
    sink.close()

    stats = sink.stats()
    assert stats["rows_rejected"] == len(bad.detections)
    stored = query.detections_for_stream(tmp_path / "nan.db", "cam-05")
    assert len(stored) == stats["rows_written"] == sum(len(r.detections) for r in frames if r is not bad)
    assert bad.frame.seq not in stored.seq


@pytest.mark.fault
def test_unreachable_postgres_fails_at_open_without_showing_the_password():
    pytest.importorskip("psycopg")
    store = postgres_store(f"postgresql://sw:s3cret-pw@127.0.0.1:{free_port()}/sw")
    sink = store.make()
    with pytest.raises(SinkError, match=r"cannot connect to PostgreSQL 'postgresql://\*\*\*@127.0.0.1") as info:
        sink.open()
    assert "s3cret-pw" not in str(info.value)


def test_sqlite_path_that_cannot_be_created_fails_at_open_naming_the_path(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    sink = sqlite_store(tmp_path / "a-file" / "det.db").make()
    with pytest.raises(SinkError, match="cannot open SQLite storage '.*a-file/det.db'.*writable"):
        sink.open()


def test_a_sqlite_sink_on_a_file_that_is_not_its_database_says_so_and_leaves_it_as_it_was(tmp_path):
    text, other = tmp_path / "notes.txt", tmp_path / "other-app.db"
    text.write_text("not a database\n" * 100)
    with closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE detections (id INTEGER PRIMARY KEY, label TEXT)")
    with pytest.raises(SinkError, match="notes.txt': the file there is not a SQLite database; choose another path"):
        sqlite_store(text).make().open()
    with pytest.raises(SinkError, match=r"other-app.db' holds tables streamweave did not make \(detections\): it is "
                                        "another application's database"):
        sqlite_store(other).make().open()
    with closing(sqlite3.connect(other)) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("detections",)]


def test_a_postgres_dsn_with_an_unknown_option_fails_at_open_as_a_sink_error_naming_it():
    pytest.importorskip("psycopg")
    sink = postgres_store(f"host=127.0.0.1 port={free_port()} password=s3cret-pw bogus_option=1").make()
    with pytest.raises(SinkError, match=r"PostgreSQL DSN: not a DSN libpq can read \(invalid connection option "
                                        "\"bogus_option\"\)") as info:
        sink.open()
    assert "s3cret-pw" not in str(info.value)


def test_a_postgres_dsn_without_its_scheme_fails_at_open_without_showing_the_password():
    """libpq's message repeats such a DSN whole, and masking finds no `scheme://user:password@` in it."""
    pytest.importorskip("psycopg")
    sink = postgres_store("sw:s3cret-pw@127.0.0.1/analytics").make()  # added live, through a reload or the API
    with pytest.raises(SinkError, match=r"PostgreSQL DSN: not a DSN libpq can read") as info:
        sink.open()
    assert "s3cret-pw" not in str(info.value)


def test_a_postgres_dsn_whose_password_holds_an_unquoted_space_fails_without_showing_a_word_of_it():
    """libpq quotes the word after the space, which is the password's rest: masking cannot tell it from a key."""
    pytest.importorskip("psycopg")
    sink = postgres_store("host=127.0.0.1 dbname=analytics password=correct horse-battery-staple").make()
    with pytest.raises(SinkError, match=r"PostgreSQL DSN: not a DSN libpq can read \(missing \"=\" after a word "
                                        r"\(a value holding spaces must be quoted: password='a b c'\)") as info:
        sink.open()
    assert "horse" not in str(info.value)


@pytest.mark.parametrize("dsn", ["postgresql://ops:50%off@127.0.0.1/analytics",
                                 "postgresql://ops@127.0.0.1/analytics?password=50%off",
                                 "postgresql://ops:50%00off@127.0.0.1/analytics"])
def test_a_postgres_dsn_whose_password_holds_a_bare_percent_fails_without_showing_it(dsn):
    """libpq quotes the part of the URL it could not percent-decode, here the password, with no `://` to mask by."""
    pytest.importorskip("psycopg")
    sink = postgres_store(dsn).make()
    with pytest.raises(SinkError, match=r"PostgreSQL DSN: not a DSN libpq can read \(.*percent-encoded.*%25") as info:
        sink.open()
    assert "off" not in str(info.value)


def test_a_storage_sink_keeps_nothing_of_a_camera_once_it_has_ended_and_still_stores_its_url(tmp_path, mot17_05):
    store = sqlite_store(tmp_path / "detections.db")
    sink = store.make(flush_interval_s=60.0)  # every row is written at close, after its camera has ended
    sink.open()
    for i in range(20):  # cameras added and removed over the API, each under an id of its own
        sink.on_stream_start(f"cam-{i}", f"rtsp://admin:hunter2@10.0.0.{i}/live")
        feed(sink, [replace(r, frame=replace(r.frame, stream_id=f"cam-{i}")) for r in mot17_05[:2]])
        sink.on_stream_end(f"cam-{i}")
    sink.close()
    with closing(sqlite3.connect(store.target)) as db:
        urls = dict(db.execute("SELECT stream_id, url FROM streams"))
    assert urls == {f"cam-{i}": f"rtsp://***@10.0.0.{i}/live" for i in range(20)}
    assert list(sink._urls) == ["cam-05"]  # the camera still running; each ended one stayed for good
