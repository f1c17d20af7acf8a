"""Reading stored results back (CLI summary, tests, notebooks); works on SQLite and PostgreSQL alike.

`target` is a SQLite file path (`~` is the home folder), a PostgreSQL DSN (`postgresql://...` or libpq's
`host=... dbname=...`), or an open sqlite3 / psycopg connection. `run`
says which runs to read: None (the default) the latest one (by start time), a run id that one, a list
of run ids those, `ALL_RUNS` every run (`runs(target)` lists them).
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np

from pipeline.errors import SinkError, first_line
from pipeline.masking import mask_url
from pipeline.sinks.outputs.payload import event_to_dict
from pipeline.sinks.storage.postgres import _psycopg, open_connection
from pipeline.sinks.storage.schema import statements
from pipeline.types import Event

Target = Any  # str | Path | sqlite3.Connection | psycopg.Connection
Runs = Union[str, Sequence[str], None]  # see the module docstring
ALL_RUNS = "*"

READ_CONNECT_TIMEOUT_S = 5.0
READ_STATEMENT_TIMEOUT_MS = 30_000
"""A PostgreSQL read gives up after these (a server that accepts connections and never answers, a query
too slow for an answer), so `query`, the events API and the console answer with an error, not never."""
_KEY_VALUE_DSN = re.compile(r"\s*[A-Za-z_]+\s*=")  # libpq's `host=db dbname=site`


@dataclass(slots=True)
class StoredDetections:
    """One stream's stored detections, ordered by (pts_ns, seq, score descending, x1, y1).

    pts_ns (N,) int64, seq (N,) int64, xyxy (N,4) float32 source pixels, class_id (N,) int32,
    score (N,) float32, track_id (N,) int64 (-1 = untracked).
    """

    pts_ns: np.ndarray
    seq: np.ndarray
    xyxy: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    track_id: np.ndarray

    def __len__(self) -> int:
        return int(self.pts_ns.shape[0])


def storage_target(sinks) -> str | None:
    """Where the first `sqlite` or `postgres` entry of `sinks:` stores its results (a path or a DSN)."""
    storage = next((sink for sink in sinks if sink.type in ("sqlite", "postgres")), None)
    if storage is None:
        return None
    return str(storage.path if storage.type == "sqlite" else storage.dsn)


def is_postgres(target: str | Path) -> bool:
    """Whether `target` names a PostgreSQL database: a postgresql:// URL, or libpq's key=value DSN that is not
    the name of an existing file."""
    if isinstance(target, Path):
        return False
    if target.startswith(("postgresql://", "postgres://")):
        return True
    return bool(_KEY_VALUE_DSN.match(target)) and not Path(target).expanduser().exists()


@contextmanager
def connect(target: Target) -> Iterator[tuple[Any, str]]:
    """Yield `(connection, parameter marker)`; connections opened here are closed afterwards, and their errors
    raise `SinkError` naming `target` (one that is not a streamweave database says so)."""
    if isinstance(target, sqlite3.Connection):
        yield target, "?"
    elif isinstance(target, (str, Path)) and is_postgres(target):
        with _postgres(str(target)) as conn:
            yield conn, "%s"
    elif isinstance(target, (str, Path)):
        with _sqlite(Path(target).expanduser()) as conn:
            yield conn, "?"
    else:
        yield target, "%s"  # an open psycopg connection


@contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.exists():
        where = "" if path.is_absolute() else (f" (relative to {os.getcwd()}: run from the folder the pipeline "
                                               "runs in, or give --db with the file's full path)")
        raise SinkError(f"no stored results at '{path}'{where}; run the pipeline with a sqlite sink first")
    if path.is_dir():
        raise SinkError(f"'{path}' is a folder, not a database file; give the file of a sqlite sink (its `path`)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)  # as_uri quotes '#', '?' and '%'
    except sqlite3.Error as exc:
        raise SinkError(f"cannot read '{path}': {exc}") from exc
    try:
        yield conn
    except sqlite3.Error as exc:
        not_sqlite = getattr(exc, "sqlite_errorname", None) == "SQLITE_NOTADB"
        raise _read_error(conn, "sqlite", f"'{path}'", exc,
                          not_sqlite or str(exc).startswith("no such table")) from exc
    finally:
        conn.close()


@contextmanager
def _postgres(dsn: str) -> Iterator[Any]:
    pg = _psycopg()
    shown = f"PostgreSQL '{mask_url(dsn)}'"
    try:
        conn = open_connection(dsn, READ_CONNECT_TIMEOUT_S, READ_STATEMENT_TIMEOUT_MS, READ_STATEMENT_TIMEOUT_MS,
                               application_name="streamweave query")
    except pg.Error as exc:
        raise SinkError(f"cannot read {shown}: {first_line(exc)}; check the server is up and the DSN (password "
                        "in PGPASSWORD)") from exc
    with conn:
        try:
            yield conn
        except pg.Error as exc:
            raise _read_error(conn, "postgres", shown, exc, exc.sqlstate == "42P01") from exc  # 42P01: no such table


def _read_error(conn, dialect: str, shown: str, exc: Exception, table_missing: bool) -> SinkError:
    """`exc`, raised reading `shown`, as a SinkError; when a table is missing (or the file is no database at all)
    and `conn` has no `streamweave_meta`, one that says it is not a streamweave database."""
    if table_missing and not _is_streamweave(conn, dialect):
        return SinkError(f"{shown} is not a streamweave database ({first_line(exc)}); give the file of a sqlite "
                         "sink or the DSN of a postgres sink")
    return SinkError(f"cannot read {shown}: {first_line(exc)}")


def _is_streamweave(conn, dialect: str) -> bool:
    try:
        return bool(conn.execute(statements(dialect).table_exists, ("streamweave_meta",)).fetchone()[0])
    except sqlite3.DatabaseError:  # not a SQLite file
        return False


def select_rows(target: Target, sql: str, params: tuple = ()) -> list[tuple]:
    with connect(target) as (conn, p):
        return list(conn.execute(sql.replace("?", p), params).fetchall())


def where_runs(run: Runs, *conditions: tuple[str, Any], instances: Sequence[str] = ()) -> tuple[str, tuple]:
    """` WHERE ...` for the runs `run` selects and every `(condition, value)` whose value is not None (a list: any of
    its values, `column IN (?)`).
    instances: only runs of these instances (`runs.instance`; empty: any), and `run` None then means the latest
    run of any of them."""
    where: list[str] = []
    params: list[Any] = []
    of_instances = f" WHERE instance IN ({', '.join('?' * len(instances))})" if instances else ""
    if run is None:
        where.append(f"run_id = (SELECT run_id FROM runs{of_instances} ORDER BY started_ns DESC, run_id DESC LIMIT 1)")
        params.extend(instances)
    elif instances:
        where.append(f"run_id IN (SELECT run_id FROM runs{of_instances})")
        params.extend(instances)
    if isinstance(run, str) and run != ALL_RUNS:
        where.append("run_id = ?")
        params.append(run)
    elif run is not None and not isinstance(run, str):
        where.append(f"run_id IN ({', '.join('?' * len(run))})" if run else "1 = 0")
        params.extend(run)
    for condition, value in conditions:
        if isinstance(value, (list, tuple)):  # `column IN (?)`: one placeholder per value
            where.append(condition.replace("?", ", ".join("?" * len(value))) if value else "1 = 0")
            params.extend(value)
        elif value is not None:
            where.append(condition)
            params.append(value)
    return (f" WHERE {' AND '.join(where)}" if where else ""), tuple(params)


def runs(target: Target) -> list[dict]:
    """Every run, newest first: run_id, config_hash, version, started_ns, ended_ns (None: running, or killed),
    instance (None: stored before instances were)."""
    rows = select_rows(target, "SELECT run_id, config_hash, version, started_ns, ended_ns, instance FROM runs "
                               "ORDER BY started_ns DESC, run_id DESC")
    keys = ("run_id", "config_hash", "version", "started_ns", "ended_ns", "instance")
    return [dict(zip(keys, row)) for row in rows]


def counts_by_stream_and_class(target: Target, run: Runs = None) -> dict[str, dict[str, int]]:
    """Detections per stream and class name: `{"cam-1": {"car": 120, "person": 7}}`."""
    counts: dict[str, dict[str, int]] = {}
    clause, params = where_runs(run)
    sql = f"SELECT stream_id, class_name, COUNT(*) FROM detections{clause} GROUP BY stream_id, class_name"
    for stream_id, name, n in select_rows(target, sql, params):
        counts.setdefault(stream_id, {})[name] = int(n)
    return counts


def detections_for_stream(
    target: Target, stream_id: str, start_pts_ns: int | None = None, end_pts_ns: int | None = None,
    run: Runs = None,
) -> StoredDetections:
    """Detections of `stream_id` with `start_pts_ns <= pts_ns < end_pts_ns` (either bound optional). Over
    several runs, pts_ns repeat (each run's file starts at 0): their rows are interleaved by pts."""
    clause, params = where_runs(run, ("stream_id = ?", stream_id), ("pts_ns >= ?", start_pts_ns),
                                ("pts_ns < ?", end_pts_ns))
    rows = select_rows(target, "SELECT pts_ns, seq, x1, y1, x2, y2, class_id, score, track_id FROM detections"
                               f"{clause} ORDER BY pts_ns, seq, score DESC, x1, y1", params)
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    exact = np.array([(r[0], r[1], r[8]) for r in rows], dtype=np.int64).reshape(-1, 3)
    return StoredDetections(
        pts_ns=exact[:, 0],
        seq=exact[:, 1],
        xyxy=table[:, 2:6].astype(np.float32),
        class_id=table[:, 6].astype(np.int32),
        score=table[:, 7].astype(np.float32),
        track_id=exact[:, 2],
    )


_EVENT_COLUMNS = ("event_id, run_id, stream_id, rule, kind, track_id, class_id, ts_ns, wall_ns, payload, class_name, "
                  "snapshot, clip, instance")


def _event(row: tuple) -> Event:
    payload = row[9] if isinstance(row[9], dict) else json.loads(row[9])  # jsonb arrives parsed
    return Event(*row[:9], payload, *row[10:])


def events(target: Target, stream_id: str | None = None, kind: str | None = None, run: Runs = None) -> list[Event]:
    """Stored events ordered by (ts_ns, event_id), optionally of one stream and/or one kind."""
    clause, params = where_runs(run, ("stream_id = ?", stream_id), ("kind = ?", kind))
    rows = select_rows(target, f"SELECT {_EVENT_COLUMNS} FROM events{clause} ORDER BY ts_ns, event_id", params)
    return [_event(row) for row in rows]


def recent_events(target: Target, *, stream_id: str | None = None, kind: str | None = None,
                  class_ids: Sequence[int] | None = None, since_wall_ns: int | None = None,
                  until_wall_ns: int | None = None, limit: int = 100, run: Runs = None) -> list[dict]:
    """The newest stored events first (by the capture time of their frames), filtered (class_ids: of any of these
    classes); each a dict as the event JSON has it (`pipeline.sinks.outputs.payload`, docs/event.schema.json)."""
    clause, params = where_runs(run, ("stream_id = ?", stream_id), ("kind = ?", kind),
                                ("class_id IN (?)", None if class_ids is None else list(class_ids)),
                                ("wall_ns >= ?", since_wall_ns), ("wall_ns < ?", until_wall_ns))
    rows = select_rows(target, f"SELECT {_EVENT_COLUMNS} FROM events{clause} ORDER BY wall_ns DESC, event_id "
                               "LIMIT ?", (*params, limit))
    return [event_to_dict(event) for event in map(_event, rows)]


def tracks(target: Target, stream_id: str, run: Runs = None) -> list[dict]:
    """Track summaries of one stream ordered by (run, track id): run_id, track_id, class_id, first/last pts_ns,
    frames."""
    clause, params = where_runs(run, ("stream_id = ?", stream_id))
    rows = select_rows(target, "SELECT run_id, track_id, class_id, first_pts_ns, last_pts_ns, frames FROM tracks"
                               f"{clause} ORDER BY run_id, track_id", params)
    keys = ("track_id", "class_id", "first_pts_ns", "last_pts_ns", "frames")
    return [{"run_id": row[0], **dict(zip(keys, (int(v) for v in row[1:])))} for row in rows]


def streams(target: Target) -> list[dict]:
    """Known streams ordered by id, over every run: stream_id, url (credentials masked), first/last seen (host ns)."""
    rows = select_rows(target, "SELECT stream_id, url, first_seen_ns, last_seen_ns FROM streams ORDER BY stream_id")
    keys = ("stream_id", "url", "first_seen_ns", "last_seen_ns")
    return [dict(zip(keys, row)) for row in rows]
