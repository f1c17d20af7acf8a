"""One schema for SQLite and PostgreSQL: the DDL, its upgrade from older versions, and the statements
the writers run; the views over it are in `views.py`.

Tables (all times are integer nanoseconds; `*_pts_ns`/`ts_ns` on the stream's clock, `*wall_ns` /
`*_seen_ns` / `*ed_ns` on the host clock from `time.time_ns()`, which retention uses):

- `runs`       run_id PK (one per start of the pipeline), config_hash, version, started_ns, ended_ns
               (NULL while it runs, or when it was killed), instance (`runtime.instance`: which instance of a
               fleet ran it; NULL in runs stored before version 5). Every other row names its run, so its
               instance too.
- `streams`    stream_id PK, url (credentials masked), first_seen_ns, last_seen_ns (over every run)
- `detections` what the detector found (`FrameResult.detections`; a sink with `what: detections`): run_id,
               stream_id, seq, pts_ns, wall_ns, class_id, class_name, score, x1, y1, x2, y2 (source pixels,
               the detector's box), track_id (of the track it was matched to; -1 = none), frame_index, epoch
               (where the frame is in its source, `pipeline.types.Frame`; -1 in rows stored before version 4).
               Never a tracker's prediction.
- `track_boxes` the tracker's boxes (`FrameResult.tracks`; a sink with `what: tracks`): run_id, stream_id,
               seq, frame_index, epoch, pts_ns, wall_ns, track_id, class_id, class_name, score, x1, y1, x2,
               y2, coasted (1: a coasting track's predicted box, score 0; 0: matched to a detection)
- `tracks`     (run_id, stream_id, track_id) PK, class_id (of the latest detection), first_pts_ns,
               last_pts_ns, frames (frames on which a detection was matched to the track, in that run),
               last_wall_ns; written with detections or track boxes
- `events`     event_id PK (`pipeline.types.make_event_id`: at-least-once delivery de-duplicates here),
               run_id, stream_id, rule, kind, track_id, class_id, ts_ns, payload (JSON text in SQLite,
               jsonb in PostgreSQL), wall_ns (capture time of the event's frame), class_name, snapshot,
               clip (NULL: no class, no such file; see `pipeline.types.Event`), instance (as its run's; NULL
               before version 5)

PostgreSQL only: `stored_batches` (id PK, stored_at) holds the id of each batch of frames' rows written in the last
day (`STORED_BATCHES_KEPT_S`), inserted in the batch's own transaction: a batch retried after the connection
dropped around its COMMIT (committed, but the answer lost) is found there and not stored twice. A SQLite commit's
outcome is always known (a local call), so SQLite needs no such table. It is created when missing, whatever the
schema version (it changes no other table, so a database that has it is still version 5 to older streamweaves).

The two dialects differ only in column types, the parameter marker and MIN/MAX vs LEAST/GREATEST,
so a query written against one gives the same rows on the other. An older database is upgraded when a sink
opens it: version 1 (before runs) gets runs, its rows becoming the run `before-runs`; version 2 gets the
events' names (NULL in its rows) and the views; version 3 gets the frames' places in their sources and
`track_boxes`; version 4 gets the instances of runs and events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import SinkError
from pipeline.sinks.storage.views import VIEWS_VERSION, view_statements

Dialect = Literal["sqlite", "postgres"]

SCHEMA_VERSION = 5
BEFORE_RUNS = "before-runs"
"""The run that holds the rows of a database written before runs existed (schema version 1)."""

RUN_COLUMNS = ("run_id", "config_hash", "version", "started_ns", "ended_ns", "instance")
DETECTION_COLUMNS = (
    "run_id", "stream_id", "seq", "pts_ns", "wall_ns", "class_id", "class_name", "score",
    "x1", "y1", "x2", "y2", "track_id", "frame_index", "epoch",
)
TRACK_BOX_COLUMNS = (
    "run_id", "stream_id", "seq", "frame_index", "epoch", "pts_ns", "wall_ns", "track_id", "class_id",
    "class_name", "score", "x1", "y1", "x2", "y2", "coasted",
)
TRACK_COLUMNS = ("run_id", "stream_id", "track_id", "class_id", "first_pts_ns", "last_pts_ns", "frames", "last_wall_ns")
EVENT_COLUMNS = ("event_id", "run_id", "stream_id", "rule", "kind", "track_id", "class_id", "ts_ns", "payload",
                 "wall_ns", "class_name", "snapshot", "clip", "instance")
STREAM_COLUMNS = ("stream_id", "url", "first_seen_ns", "last_seen_ns")
_TABLE_NAMES = ("runs", "streams", "detections", "track_boxes", "tracks", "events")

_META = "CREATE TABLE IF NOT EXISTS streamweave_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

_TRACKS = """
CREATE TABLE IF NOT EXISTS {table} (
    run_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    track_id {int} NOT NULL,
    class_id INTEGER NOT NULL,
    first_pts_ns {int} NOT NULL,
    last_pts_ns {int} NOT NULL,
    frames {int} NOT NULL,
    last_wall_ns {int} NOT NULL,
    PRIMARY KEY (run_id, stream_id, track_id)
)"""

_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    started_ns {int} NOT NULL,
    ended_ns {int},
    instance TEXT
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    url TEXT,
    first_seen_ns {int} NOT NULL,
    last_seen_ns {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    run_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    seq {int} NOT NULL,
    pts_ns {int} NOT NULL,
    wall_ns {int} NOT NULL,
    class_id INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    track_id {int} NOT NULL,
    frame_index {int} NOT NULL,
    epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS track_boxes (
    run_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    seq {int} NOT NULL,
    frame_index {int} NOT NULL,
    epoch INTEGER NOT NULL,
    pts_ns {int} NOT NULL,
    wall_ns {int} NOT NULL,
    track_id {int} NOT NULL,
    class_id INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    coasted INTEGER NOT NULL
);
{tracks};
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    track_id {int} NOT NULL,
    class_id INTEGER NOT NULL,
    ts_ns {int} NOT NULL,
    payload {json} NOT NULL,
    wall_ns {int} NOT NULL,
    class_name TEXT,
    snapshot TEXT,
    clip TEXT,
    instance TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_ns);
CREATE INDEX IF NOT EXISTS runs_instance_started ON runs (instance, started_ns);
CREATE INDEX IF NOT EXISTS detections_run_stream_pts ON detections (run_id, stream_id, pts_ns);
CREATE INDEX IF NOT EXISTS detections_run_stream_track ON detections (run_id, stream_id, track_id);
CREATE INDEX IF NOT EXISTS detections_wall ON detections (wall_ns);
CREATE INDEX IF NOT EXISTS track_boxes_run_stream_track ON track_boxes (run_id, stream_id, track_id);
CREATE INDEX IF NOT EXISTS track_boxes_wall ON track_boxes (wall_ns);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id);
CREATE INDEX IF NOT EXISTS events_run_stream_kind ON events (run_id, stream_id, kind, rule, track_id);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts_ns);
CREATE INDEX IF NOT EXISTS events_stream_ts ON events (stream_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_wall ON events (wall_ns)
"""

# Version 1 had no runs: every row gets the run BEFORE_RUNS, and tracks are keyed by run from now on.
_FROM_VERSION_1 = """
ALTER TABLE detections ADD COLUMN run_id TEXT NOT NULL DEFAULT '{before}';
ALTER TABLE events ADD COLUMN run_id TEXT NOT NULL DEFAULT '{before}';
{tracks_v2};
INSERT INTO tracks_v2 (run_id, stream_id, track_id, class_id, first_pts_ns, last_pts_ns, frames, last_wall_ns)
    SELECT '{before}', stream_id, track_id, class_id, first_pts_ns, last_pts_ns, frames, last_wall_ns FROM tracks;
DROP TABLE tracks;
ALTER TABLE tracks_v2 RENAME TO tracks;
DROP INDEX IF EXISTS detections_stream_pts;
DROP INDEX IF EXISTS detections_stream_track
"""

# Version 2 had no names on events.
_FROM_VERSION_2 = """
ALTER TABLE events ADD COLUMN class_name TEXT;
ALTER TABLE events ADD COLUMN snapshot TEXT;
ALTER TABLE events ADD COLUMN clip TEXT
"""

# Version 3 did not say where a detection's frame is in its source.
_FROM_VERSION_3 = """
ALTER TABLE detections ADD COLUMN frame_index {int} NOT NULL DEFAULT -1;
ALTER TABLE detections ADD COLUMN epoch INTEGER NOT NULL DEFAULT -1
"""

# Version 4 did not say which instance of a fleet ran a run or decided an event (version 1 had no runs table:
# it is created with the column).
_FROM_VERSION_4_EVENTS = "ALTER TABLE events ADD COLUMN instance TEXT"
_FROM_VERSION_4 = ["ALTER TABLE runs ADD COLUMN instance TEXT", _FROM_VERSION_4_EVENTS]

STORED_BATCHES_KEPT_S = 86_400
"""How long a stored batch's id is kept: a batch retried later than this after its commit would be stored again."""

# PostgreSQL only (see the module docstring); made when `stored_batches` is missing, so its index never locks a
# table that is already there.
_STORED_BATCHES = [
    "CREATE TABLE IF NOT EXISTS stored_batches (id TEXT PRIMARY KEY, stored_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS stored_batches_stored_at ON stored_batches (stored_at)",
]

_RECORD_BEFORE_RUNS = """
INSERT INTO runs (run_id, config_hash, version, started_ns, ended_ns)
    SELECT '{before}', '', 'schema 1', COALESCE(MIN(w), 0), MAX(w)
    FROM (SELECT wall_ns AS w FROM detections UNION ALL SELECT wall_ns AS w FROM events) AS written
"""


@dataclass(frozen=True)
class Statements:
    """The SQL one dialect runs; parameters are positional, in the `*_COLUMNS` order."""

    create: list[str]
    upgrade: dict[int, list[str]]  # from each older version to the current one, views included
    replace_views: list[str]  # this version's views over those of an older VIEWS_VERSION
    insert_detection: str
    insert_track_box: str
    upsert_track: str
    insert_event: str
    upsert_stream: str
    upsert_run: str
    set_meta: str  # key, value into streamweave_meta
    table_exists: str  # one row, true when the table named (parameter) exists
    retention: list[str]  # per table, delete at most (second parameter) rows older than (first parameter)
    # PostgreSQL only (None in SQLite): a batch's id, stored with it; see the module docstring
    has_stored_batches: str | None = None  # one row, true when the table exists
    create_stored_batches: tuple[str, ...] = ()
    claim_batch: str | None = None  # inserts the id; no row inserted (rowcount 0): the batch is stored already
    prune_batches: str | None = None


def statements(dialect: Dialect) -> Statements:
    """SQL for `dialect`; the schema and the meaning of every statement are the same for both."""
    if dialect == "sqlite":
        p, types, least, greatest, json_param = "?", {"int": "INTEGER", "json": "TEXT"}, "MIN", "MAX", "?"
    elif dialect == "postgres":
        p, types, least, greatest = "%s", {"int": "BIGINT", "json": "JSONB"}, "LEAST", "GREATEST"
        json_param = "CAST(%s AS jsonb)"
    else:
        raise ValueError(f"unknown storage dialect {dialect!r}; use 'sqlite' or 'postgres'")
    tracks = _TRACKS.format(table="tracks", **types).strip()
    create = [_META, *_split(_TABLES.format(tracks=tracks, **types))]
    from_1 = _split(_FROM_VERSION_1.format(before=BEFORE_RUNS, tracks_v2=_TRACKS.format(table="tracks_v2", **types)))
    from_2, from_3, from_4 = _split(_FROM_VERSION_2), _split(_FROM_VERSION_3.format(**types)), _FROM_VERSION_4
    views = view_statements(dialect)

    def values(columns: tuple[str, ...]) -> str:
        return ", ".join(json_param if c == "payload" else p for c in columns)

    def insert(table: str, columns: tuple[str, ...]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values(columns)})"

    batches = {} if dialect == "sqlite" else dict(
        has_stored_batches="SELECT to_regclass('stored_batches') IS NOT NULL",
        create_stored_batches=tuple(_STORED_BATCHES),
        claim_batch="INSERT INTO stored_batches (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
        # SKIP LOCKED: instances pruning at once neither wait for nor deadlock with each other
        prune_batches=("DELETE FROM stored_batches WHERE id IN (SELECT id FROM stored_batches WHERE stored_at < "
                       f"now() - interval '{STORED_BATCHES_KEPT_S} seconds' FOR UPDATE SKIP LOCKED)"),
    )

    return Statements(
        create=[*create, *views],
        upgrade={
            1: [*from_1, *from_2, *from_3, _FROM_VERSION_4_EVENTS, *create,
                _RECORD_BEFORE_RUNS.format(before=BEFORE_RUNS).strip(), *views],
            2: [*from_2, *from_3, *from_4, *create, *views],
            3: [*from_3, *from_4, *create, *views],
            4: [*from_4, *create, *views],
        },
        replace_views=view_statements(dialect, replace=True),
        insert_detection=insert("detections", DETECTION_COLUMNS),
        insert_track_box=insert("track_boxes", TRACK_BOX_COLUMNS),
        upsert_track=(
            f"{insert('tracks', TRACK_COLUMNS)} "
            "ON CONFLICT (run_id, stream_id, track_id) DO UPDATE SET class_id = excluded.class_id, "
            f"first_pts_ns = {least}(tracks.first_pts_ns, excluded.first_pts_ns), "
            f"last_pts_ns = {greatest}(tracks.last_pts_ns, excluded.last_pts_ns), "
            "frames = tracks.frames + excluded.frames, "
            f"last_wall_ns = {greatest}(tracks.last_wall_ns, excluded.last_wall_ns)"
        ),
        insert_event=f"{insert('events', EVENT_COLUMNS)} ON CONFLICT (event_id) DO NOTHING",
        upsert_stream=(
            f"{insert('streams', STREAM_COLUMNS)} "
            "ON CONFLICT (stream_id) DO UPDATE SET url = COALESCE(excluded.url, streams.url), "
            f"first_seen_ns = {least}(streams.first_seen_ns, excluded.first_seen_ns), "
            f"last_seen_ns = {greatest}(streams.last_seen_ns, excluded.last_seen_ns)"
        ),
        upsert_run=(
            f"{insert('runs', RUN_COLUMNS)} "
            "ON CONFLICT (run_id) DO UPDATE SET ended_ns = excluded.ended_ns"
        ),
        set_meta=(
            f"INSERT INTO streamweave_meta (key, value) VALUES ({p}, {p}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        table_exists=("SELECT COUNT(*) FROM sqlite_master WHERE name = ?" if dialect == "sqlite" else
                      "SELECT to_regclass(%s) IS NOT NULL"),
        retention=[
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
            if dialect == "sqlite" else  # ctid = ANY(ARRAY(...)): a TID scan of the rows found, no join
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s))"
            for table, column in (("detections", "wall_ns"), ("track_boxes", "wall_ns"), ("events", "wall_ns"),
                                  ("tracks", "last_wall_ns"))
        ],
        **batches,
    )


def create_or_upgrade(conn: Any, sql: Statements, where: str) -> None:
    """Create the schema in `conn` (sqlite3 or psycopg, inside a transaction), or bring an older version's
    up to this one. SinkError, naming `where`, for a database a newer streamweave wrote, and for one without
    streamweave's schema that has tables of its names (another application's). A database of this
    version is left as it is, but for `stored_batches` (PostgreSQL), made when missing, and views of an older
    `VIEWS_VERSION`, replaced (on PostgreSQL in place, so one's own views may read them)."""
    conn.execute(_META)
    row = conn.execute("SELECT value FROM streamweave_meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else None
    if found is not None and found > SCHEMA_VERSION:
        raise SinkError(f"{where} has schema version {found}, written by a newer streamweave; this one writes "
                        f"version {SCHEMA_VERSION}: upgrade streamweave or choose another database")
    if found is None:
        taken = [table for table in _TABLE_NAMES if conn.execute(sql.table_exists, (table,)).fetchone()[0]]
        if taken:
            raise SinkError(f"{where} holds tables streamweave did not make ({', '.join(taken)}): it is another "
                            "application's database; give streamweave a file or database of its own")
    if found != SCHEMA_VERSION:
        for ddl in sql.create if found is None else sql.upgrade[found]:
            conn.execute(ddl)
        conn.execute(sql.set_meta, ("schema_version", str(SCHEMA_VERSION)))
    row = conn.execute("SELECT value FROM streamweave_meta WHERE key = 'views_version'").fetchone()
    if row is None or int(row[0]) < VIEWS_VERSION:  # a newer streamweave's views are kept as they are
        for ddl in sql.replace_views:
            conn.execute(ddl)
        conn.execute(sql.set_meta, ("views_version", str(VIEWS_VERSION)))
    if sql.has_stored_batches is not None and not conn.execute(sql.has_stored_batches).fetchone()[0]:
        for ddl in sql.create_stored_batches:
            conn.execute(ddl)


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
