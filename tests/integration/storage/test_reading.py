"""Reading stored results back (`query`, the events API, the console) on a real SQLite file and a real PostgreSQL
server: from the database the sink wrote, named as the config names it; with bounded waits; and with a clear
error for what is not a streamweave database."""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.errors import SinkError
from pipeline.sinks.storage import query
from pipeline.sinks.storage.cli import query_command
from pipeline.sinks.storage.schema import SCHEMA_VERSION
from tests.integration.storage.replay import RUN, deliver_events, feed, postgres_store, sqlite_store


@pytest.mark.parametrize("name", ["~/store/detections.db", "site#1.db", "cams?night.db", "100%25.db"])
def test_the_reader_opens_the_file_the_sink_wrote_whatever_its_name(name, tmp_path, monkeypatch, mot17_05, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    sink = sqlite_store(Path(name)).make()
    sink.open()
    feed(sink, mot17_05[:20])
    sink.close()

    assert [r["run_id"] for r in query.runs(name)] == [RUN.run_id]
    assert query_command(["--db", name, "runs"]) == 0
    assert RUN.run_id in capsys.readouterr().out
    written = Path(name).expanduser().absolute()
    assert {p.name[:len(written.name)] for p in written.parent.iterdir()} == {written.name}  # no other file opened


def test_a_key_value_dsn_reads_the_database_the_sink_wrote_with_it(postgres_server, postgres_dsn, mot17_05, capsys):
    dsn = f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname={postgres_dsn.rsplit('/', 1)[1]}"
    sink = postgres_store(dsn).make()
    sink.open()
    feed(sink, mot17_05[:20])
    sink.close()

    assert [r["run_id"] for r in query.runs(dsn)] == [RUN.run_id]
    assert query.counts_by_stream_and_class(dsn) == query.counts_by_stream_and_class(postgres_dsn) != {}
    assert query_command(["--db", dsn, "runs"]) == 0
    assert RUN.run_id in capsys.readouterr().out


@pytest.mark.fault
def test_reading_a_postgres_server_that_never_answers_ends_with_a_sink_error():
    pytest.importorskip("psycopg")
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            query.runs(dsn)
        except SinkError as exc:
            outcome.append(exc)

    with socket.socket() as mute:  # takes connections into its backlog and never says a word
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        dsn = f"postgresql://postgres@127.0.0.1:{mute.getsockname()[1]}/postgres"
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(120)  # the test's own bound: without a connect timeout the read never ends
        assert not reader.is_alive(), "the read still waits on a server that never answers"
    (error,) = outcome
    assert str(error).startswith(f"cannot read PostgreSQL 'postgresql://***@127.0.0.1:{dsn.rsplit(':', 1)[1]}': "
                                 "connection timeout expired")


@pytest.mark.fault
def test_a_postgres_read_slower_than_the_statement_timeout_is_cancelled_with_a_sink_error(postgres_dsn, monkeypatch):
    monkeypatch.setattr(query, "READ_STATEMENT_TIMEOUT_MS", 200)
    with pytest.raises(SinkError, match=r"cannot read PostgreSQL 'postgresql://.*': canceling statement due to "
                                        "statement timeout"):
        query.select_rows(postgres_dsn, "SELECT pg_sleep(10)")


def test_reading_what_is_not_a_streamweave_database_says_so_naming_it(tmp_path, postgres_dsn, capsys):
    text, other = tmp_path / "notes.txt", tmp_path / "other-app.db"
    text.write_text("not a database\n" * 100)
    with closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE detections (id INTEGER PRIMARY KEY, label TEXT)")
    for target, shown in ((text, "notes.txt'"), (other, "other-app.db'"),  # an empty PostgreSQL database:
                          (postgres_dsn, f"PostgreSQL 'postgresql://***@127.0.0.1:{postgres_dsn.rsplit(':', 1)[1]}'")):
        with pytest.raises(SinkError, match=re.escape(f"{shown} is not a streamweave database")):
            query.runs(target)
        assert query_command(["--db", str(target)]) == 1
        assert f"{shown} is not a streamweave database" in capsys.readouterr().err


def test_query_on_a_database_a_newer_streamweave_wrote_says_to_upgrade(tmp_path, capsys):
    newer = tmp_path / "newer.db"
    with closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute("CREATE TABLE streamweave_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO streamweave_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
    assert query_command(["--db", str(newer)]) == 1
    assert (f"newer.db has schema version {SCHEMA_VERSION + 1}, written by a newer streamweave; this one reads version "
            f"{SCHEMA_VERSION}: upgrade streamweave to read it") in capsys.readouterr().err


def test_query_given_a_folder_instead_of_the_database_file_says_so_naming_it(tmp_path, capsys):
    assert query_command(["--db", str(tmp_path)]) == 1
    assert f"'{tmp_path}' is a folder, not a database file" in capsys.readouterr().err
    with pytest.raises(SinkError, match=re.escape(f"'{tmp_path}' is a folder")):
        query.runs(tmp_path)


def test_query_from_or_until_a_time_beyond_64_bits_of_nanoseconds_answers_every_stored_event(store, mot17_05,
                                                                                            tmp_path, capsys):
    sink = store.make(batch_size=500, flush_interval_s=0.05)
    sink.open()
    feed(sink, mot17_05[:50])
    deliver_events(sink, mot17_05[:50], tmp_path / "outbox.db")
    sink.close()
    stored = sum(len(r.events) for r in mot17_05[:50])

    for since, until in (("0001-01-01", "2300-01-01"), ("1969-12-31", "9999-12-31T23:59:59Z")):
        assert query_command(["--db", str(store.target), "events", "--since", since, "--until", until,
                              "--format", "json"]) == 0, capsys.readouterr().err
        assert sum(row["events"] for row in json.loads(capsys.readouterr().out)) == stored


@pytest.mark.parametrize("what", ["lines", "zones", "events", "summary"])
def test_a_csv_answer_with_no_rows_still_has_its_header(what, tmp_path, mot17_05, capsys):
    """A nightly `query lines --format csv > counts.csv` on a quiet day gave an empty file, which a CSV reader
    refuses (pandas: 'No columns to parse from file') instead of reading no rows."""
    sink = sqlite_store(tmp_path / "detections.db").make()
    sink.open()
    feed(sink, mot17_05[:20])  # a run, with no crossings, visits or events
    sink.close()
    assert query_command(["--db", str(tmp_path / "detections.db"), what, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    headers = {"lines": "run_id,stream_id,line,direction,class_name,bucket,crossings",
               "zones": "run_id,stream_id,zone,class_name,visits,inside,mean_dwell_s,median_dwell_s,max_dwell_s",
               "events": "run_id,stream_id,kind,rule,bucket,events"}
    if what != "summary":
        assert out == headers[what] + "\n"
    else:
        assert [f"# {name}\n{header}\n" in out for name, header in headers.items()] == [True, True, True]


def test_query_of_a_relative_database_that_is_not_here_says_where_it_looked(tmp_path, monkeypatch, capsys):
    """A config's relative paths are relative to the folder the pipeline runs in (a systemd service's is
    /var/lib/streamweave): `query site.yaml` from another folder looked for 'detections.db' there and said only
    that there were no stored results."""
    monkeypatch.chdir(tmp_path)
    assert query_command(["--db", "runs/detections.db", "lines"]) == 1
    err = capsys.readouterr().err
    assert f"no stored results at 'runs/detections.db' (relative to {tmp_path}" in err and "--db" in err
