"""One schema for SQLite and PostgreSQL: the DDL and the statements the writers run.

Tables (all times are integer nanoseconds; `*_pts_ns`/`ts_ns` on the stream's clock, `*wall_ns` /
`*_seen_ns` on the host clock from `time.time_ns()`, which retention uses):

- `streams`    stream_id PK, url (credentials masked), first_seen_ns, last_seen_ns
- `detections` stream_id, seq, pts_ns, wall_ns, class_id, class_name, score, x1, y1, x2, y2 (source
               pixels), track_id (-1 = not tracked, as in `Detections.track_id`)
- `tracks`     (stream_id, track_id) PK, class_id (of the latest detection), first_pts_ns, last_pts_ns,
               frames (detections of the track), last_wall_ns
- `events`     event_id PK (at-least-once delivery de-duplicates here), stream_id, rule, kind, track_id,
               class_id, ts_ns, payload (JSON text in SQLite, jsonb in PostgreSQL), wall_ns

The two dialects differ only in column types, the parameter marker and MIN/MAX vs LEAST/GREATEST,
so a query written against one gives the same rows on the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

SCHEMA_VERSION = 1

DETECTION_COLUMNS = (
    "stream_id", "seq", "pts_ns", "wall_ns", "class_id", "class_name", "score",
    "x1", "y1", "x2", "y2", "track_id",
)
TRACK_COLUMNS = ("stream_id", "track_id", "class_id", "first_pts_ns", "last_pts_ns", "frames", "last_wall_ns")
EVENT_COLUMNS = ("event_id", "stream_id", "rule", "kind", "track_id", "class_id", "ts_ns", "payload", "wall_ns")
STREAM_COLUMNS = ("stream_id", "url", "first_seen_ns", "last_seen_ns")

_TABLES = """
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    url TEXT,
    first_seen_ns {int} NOT NULL,
    last_seen_ns {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    stream_id TEXT NOT NULL,
    seq {int} NOT NULL,
    pts_ns {int} NOT NULL,
    wall_ns {int} NOT NULL,
    class_id INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    track_id {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS tracks (
    stream_id TEXT NOT NULL,
    track_id {int} NOT NULL,
    class_id INTEGER NOT NULL,
    first_pts_ns {int} NOT NULL,
    last_pts_ns {int} NOT NULL,
    frames {int} NOT NULL,
    last_wall_ns {int} NOT NULL,
    PRIMARY KEY (stream_id, track_id)
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    track_id {int} NOT NULL,
    class_id INTEGER NOT NULL,
    ts_ns {int} NOT NULL,
    payload {json} NOT NULL,
    wall_ns {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS detections_stream_pts ON detections (stream_id, pts_ns);
CREATE INDEX IF NOT EXISTS detections_stream_track ON detections (stream_id, track_id);
CREATE INDEX IF NOT EXISTS detections_wall ON detections (wall_ns);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts_ns);
CREATE INDEX IF NOT EXISTS events_stream_ts ON events (stream_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_wall ON events (wall_ns);
CREATE TABLE IF NOT EXISTS streamweave_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Statements:
    """The SQL one dialect runs; parameters are positional, in the `*_COLUMNS` order."""

    create: list[str]
    insert_detection: str
    upsert_track: str
    insert_event: str
    upsert_stream: str
    set_version: str
    retention: list[str]


def statements(dialect: Dialect) -> Statements:
    """SQL for `dialect`; the schema and the meaning of every statement are the same for both."""
    if dialect == "sqlite":
        p, types, least, greatest, json_param = "?", {"int": "INTEGER", "json": "TEXT"}, "MIN", "MAX", "?"
    elif dialect == "postgres":
        p, types, least, greatest = "%s", {"int": "BIGINT", "json": "JSONB"}, "LEAST", "GREATEST"
        json_param = "CAST(%s AS jsonb)"
    else:
        raise ValueError(f"unknown storage dialect {dialect!r}; use 'sqlite' or 'postgres'")
    create = [s.strip() for s in _TABLES.format(**types).split(";") if s.strip()]

    def values(columns: tuple[str, ...]) -> str:
        return ", ".join(json_param if c == "payload" else p for c in columns)

    return Statements(
        create=create,
        insert_detection=f"INSERT INTO detections ({', '.join(DETECTION_COLUMNS)}) VALUES ({values(DETECTION_COLUMNS)})",
        upsert_track=(
            f"INSERT INTO tracks ({', '.join(TRACK_COLUMNS)}) VALUES ({values(TRACK_COLUMNS)}) "
            "ON CONFLICT (stream_id, track_id) DO UPDATE SET class_id = excluded.class_id, "
            f"first_pts_ns = {least}(tracks.first_pts_ns, excluded.first_pts_ns), "
            f"last_pts_ns = {greatest}(tracks.last_pts_ns, excluded.last_pts_ns), "
            "frames = tracks.frames + excluded.frames, "
            f"last_wall_ns = {greatest}(tracks.last_wall_ns, excluded.last_wall_ns)"
        ),
        insert_event=(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({values(EVENT_COLUMNS)}) "
            "ON CONFLICT (event_id) DO NOTHING"
        ),
        upsert_stream=(
            f"INSERT INTO streams ({', '.join(STREAM_COLUMNS)}) VALUES ({values(STREAM_COLUMNS)}) "
            "ON CONFLICT (stream_id) DO UPDATE SET url = COALESCE(excluded.url, streams.url), "
            f"first_seen_ns = {least}(streams.first_seen_ns, excluded.first_seen_ns), "
            f"last_seen_ns = {greatest}(streams.last_seen_ns, excluded.last_seen_ns)"
        ),
        set_version=(
            f"INSERT INTO streamweave_meta (key, value) VALUES ('schema_version', {p}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        retention=[
            f"DELETE FROM detections WHERE wall_ns < {p}",
            f"DELETE FROM events WHERE wall_ns < {p}",
            f"DELETE FROM tracks WHERE last_wall_ns < {p}",
        ],
    )
