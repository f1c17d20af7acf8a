"""Reading stored results back (CLI summary, tests, notebooks); works on SQLite and PostgreSQL alike.

`target` is a SQLite file path, a `postgresql://` DSN, or an open sqlite3 / psycopg connection. `run`
says which runs to read: None (the default) the latest one (by start time), a run id that one, a list
of run ids those, `ALL_RUNS` every run (`runs(target)` lists them).
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np

from pipeline.errors import SinkError
from pipeline.masking import mask_url
from pipeline.sinks.outputs.payload import event_to_dict
from pipeline.types import Event

Target = Any  # str | Path | sqlite3.Connection | psycopg.Connection
Runs = Union[str, Sequence[str], None]  # see the module docstring
ALL_RUNS = "*"


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


@contextmanager
def connect(target: Target) -> Iterator[tuple[Any, str]]:
    """Yield `(connection, parameter marker)`; connections opened here are closed afterwards."""
    if isinstance(target, sqlite3.Connection):
        yield target, "?"
        return
    if isinstance(target, (str, Path)) and str(target).startswith(("postgresql://", "postgres://")):
        import psycopg  # noqa: PLC0415 - optional dependency

        try:
            conn = psycopg.connect(str(target), autocommit=True)
        except psycopg.OperationalError as exc:
            raise SinkError(f"cannot read PostgreSQL '{mask_url(str(target))}': {str(exc).strip().splitlines()[0]}; "
                            "check the server is up and the DSN (password in PGPASSWORD)") from exc
        with conn:
            yield conn, "%s"
        return
    if isinstance(target, (str, Path)):
        path = Path(target)
        if not path.exists():
            raise SinkError(f"no stored results at '{path}'; run the pipeline with a sqlite sink first")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            yield conn, "?"
        finally:
            conn.close()
        return
    yield target, "%s"  # an open psycopg connection


def select_rows(target: Target, sql: str, params: tuple = ()) -> list[tuple]:
    with connect(target) as (conn, p):
        return list(conn.execute(sql.replace("?", p), params).fetchall())


def where_runs(run: Runs, *conditions: tuple[str, Any], instances: Sequence[str] = ()) -> tuple[str, tuple]:
    """` WHERE ...` for the runs `run` selects and every `(condition, value)` whose value is not None.
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
        if value is not None:
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
                  class_id: int | None = None, since_wall_ns: int | None = None, until_wall_ns: int | None = None,
                  limit: int = 100, run: Runs = None) -> list[dict]:
    """The newest stored events first (by the capture time of their frames), filtered; each a dict as the
    event JSON has it (`pipeline.sinks.outputs.payload`, docs/event.schema.json)."""
    clause, params = where_runs(run, ("stream_id = ?", stream_id), ("kind = ?", kind), ("class_id = ?", class_id),
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
