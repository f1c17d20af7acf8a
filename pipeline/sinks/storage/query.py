"""Reading stored results back (CLI summary, tests, notebooks); works on SQLite and PostgreSQL alike.

`target` is a SQLite file path, a `postgresql://` DSN, or an open sqlite3 / psycopg connection.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import SinkError
from pipeline.types import Event

Target = Any  # str | Path | sqlite3.Connection | psycopg.Connection


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


@contextmanager
def connect(target: Target) -> Iterator[tuple[Any, str]]:
    """Yield `(connection, parameter marker)`; connections opened here are closed afterwards."""
    if isinstance(target, sqlite3.Connection):
        yield target, "?"
        return
    if isinstance(target, (str, Path)) and str(target).startswith(("postgresql://", "postgres://")):
        import psycopg  # noqa: PLC0415 - optional dependency

        with psycopg.connect(str(target), autocommit=True) as conn:
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


def _rows(target: Target, sql: str, params: tuple = ()) -> list[tuple]:
    with connect(target) as (conn, p):
        return list(conn.execute(sql.replace("?", p), params).fetchall())


def counts_by_stream_and_class(target: Target) -> dict[str, dict[str, int]]:
    """Detections per stream and class name: `{"cam-1": {"car": 120, "person": 7}}`."""
    counts: dict[str, dict[str, int]] = {}
    sql = "SELECT stream_id, class_name, COUNT(*) FROM detections GROUP BY stream_id, class_name"
    for stream_id, name, n in _rows(target, sql):
        counts.setdefault(stream_id, {})[name] = int(n)
    return counts


def detections_for_stream(
    target: Target, stream_id: str, start_pts_ns: int | None = None, end_pts_ns: int | None = None
) -> StoredDetections:
    """Detections of `stream_id` with `start_pts_ns <= pts_ns < end_pts_ns` (either bound optional)."""
    lo = -(2**63) if start_pts_ns is None else start_pts_ns
    hi = 2**63 - 1 if end_pts_ns is None else end_pts_ns
    rows = _rows(
        target,
        "SELECT pts_ns, seq, x1, y1, x2, y2, class_id, score, track_id FROM detections "
        "WHERE stream_id = ? AND pts_ns >= ? AND pts_ns < ? ORDER BY pts_ns, seq, score DESC, x1, y1",
        (stream_id, lo, hi),
    )
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


def events(target: Target, stream_id: str | None = None, kind: str | None = None) -> list[Event]:
    """Stored events ordered by (ts_ns, event_id), optionally of one stream and/or one kind."""
    where, params = [], []
    for column, value in (("stream_id", stream_id), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = _rows(
        target,
        "SELECT event_id, stream_id, rule, kind, track_id, class_id, ts_ns, payload FROM events"
        f"{clause} ORDER BY ts_ns, event_id",
        tuple(params),
    )
    return [Event(*row[:7], payload=row[7] if isinstance(row[7], dict) else json.loads(row[7])) for row in rows]


def recent_events(target: Target, *, stream_id: str | None = None, kind: str | None = None,
                  class_id: int | None = None, since_wall_ns: int | None = None, until_wall_ns: int | None = None,
                  limit: int = 100) -> list[dict]:
    """The newest stored events first (by host time at storing), filtered; each a dict with the Event's
    fields and `wall_ns`."""
    where, params = [], []
    for condition, value in (("stream_id = ?", stream_id), ("kind = ?", kind), ("class_id = ?", class_id),
                             ("wall_ns >= ?", since_wall_ns), ("wall_ns < ?", until_wall_ns)):
        if value is not None:
            where.append(condition)
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = _rows(target, "SELECT event_id, stream_id, rule, kind, track_id, class_id, ts_ns, payload, wall_ns "
                 f"FROM events{clause} ORDER BY wall_ns DESC, event_id LIMIT ?", (*params, limit))
    keys = ("event_id", "stream_id", "rule", "kind", "track_id", "class_id", "ts_ns", "payload", "wall_ns")
    return [{**dict(zip(keys, row)), "payload": row[7] if isinstance(row[7], dict) else json.loads(row[7])}
            for row in rows]


def tracks(target: Target, stream_id: str) -> list[dict]:
    """Track summaries of one stream ordered by track id: track_id, class_id, first/last pts_ns, frames."""
    rows = _rows(
        target,
        "SELECT track_id, class_id, first_pts_ns, last_pts_ns, frames FROM tracks WHERE stream_id = ? ORDER BY track_id",
        (stream_id,),
    )
    keys = ("track_id", "class_id", "first_pts_ns", "last_pts_ns", "frames")
    return [dict(zip(keys, (int(v) for v in row))) for row in rows]


def streams(target: Target) -> list[dict]:
    """Known streams ordered by id: stream_id, url (credentials masked), first/last seen (host ns)."""
    rows = _rows(target, "SELECT stream_id, url, first_seen_ns, last_seen_ns FROM streams ORDER BY stream_id")
    keys = ("stream_id", "url", "first_seen_ns", "last_seen_ns")
    return [dict(zip(keys, row)) for row in rows]
