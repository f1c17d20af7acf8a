"""The SQL views over the stored events, for `run_pipeline.py query` and for anyone's own tools.

They are part of the schema (created and upgraded with it, `schema.SCHEMA_VERSION`), with a version of their own
(`VIEWS_VERSION`), and give the same rows on SQLite and PostgreSQL. Times: `*_ns` as in the tables; `*_time` the
host time as ISO 8601 UTC text to the millisecond (`2025-03-14T09:15:02.123Z`, as in the event JSON), which sorts
and compares as text; `day` (`2025-03-14`) and `hour` (`2025-03-14T09:00:00Z`) are UTC.

- `events_named`    every event, readable: event_id, run_id, stream_id, kind, rule, track_id, class_id,
                    class_name, ts_ns, wall_ns, wall_time, zone, line, direction, dwell_s, reason (of an
                    exit), snapshot, clip, payload, instance
- `line_crossings`  one row per crossing: run_id, stream_id, line, direction, track_id, class_id,
                    class_name, ts_ns, wall_ns, wall_time, event_id
- `line_counts`     crossings per run_id, stream_id, line, direction, class_name, day, hour
- `zone_visits`     one row per visit (from its zone_enter; the exit columns are NULL while it goes on):
                    run_id, stream_id, zone, track_id, class_id, class_name, entered_ts_ns,
                    entered_wall_ns, entered_time, exited_ts_ns, exited_wall_ns, exited_time, dwell_s,
                    exit_reason
- `zone_dwell`      per run_id, stream_id, zone, class_name: visits, ended, mean/min/max_dwell_s
- `event_counts`    events per run_id, stream_id, kind, rule, class_name, day, hour
"""
from __future__ import annotations

VIEWS_VERSION = 2
"""The views' own version, kept as `views_version` in `streamweave_meta` (none: 1). A database whose views are older
gets these when a sink opens it, whatever its schema version: views change no table, so a streamweave of the same
schema version still opens the database. 2: a payload field of another JSON type than the view's column (an event
of a plugin with `dwell_s: "long"`) reads NULL; PostgreSQL's cast failed every query on the view."""

VIEWS = ("events_named", "line_crossings", "line_counts", "zone_visits", "zone_dwell", "event_counts")

_EVENTS_NAMED = """
CREATE VIEW events_named AS
SELECT event_id, run_id, stream_id, kind, rule, track_id, class_id, class_name, ts_ns, wall_ns,
       {wall_time} AS wall_time,
       {zone} AS zone, {line} AS line, {direction} AS direction, {dwell_s} AS dwell_s, {reason} AS reason,
       snapshot, clip, payload, instance
FROM events"""

_LINE_CROSSINGS = """
CREATE VIEW line_crossings AS
SELECT run_id, stream_id, rule AS line, direction, track_id, class_id, class_name, ts_ns, wall_ns, wall_time,
       event_id
FROM events_named WHERE kind = 'line_cross'"""

_LINE_COUNTS = """
CREATE VIEW line_counts AS
SELECT run_id, stream_id, line, direction, class_name, substr(wall_time, 1, 10) AS day,
       substr(wall_time, 1, 13) || ':00:00Z' AS hour, COUNT(*) AS crossings
FROM line_crossings GROUP BY 1, 2, 3, 4, 5, 6, 7"""

_ZONE_VISITS = """
CREATE VIEW zone_visits AS
SELECT e.run_id, e.stream_id, e.rule AS zone, e.track_id, e.class_id, e.class_name,
       e.ts_ns AS entered_ts_ns, e.wall_ns AS entered_wall_ns, e.wall_time AS entered_time,
       x.ts_ns AS exited_ts_ns, x.wall_ns AS exited_wall_ns, x.wall_time AS exited_time,
       x.dwell_s, x.reason AS exit_reason
FROM events_named e LEFT JOIN events_named x
    ON x.run_id = e.run_id AND x.stream_id = e.stream_id AND x.kind = 'zone_exit' AND x.rule = e.rule
    AND x.track_id = e.track_id AND {x_entered_ns} = e.ts_ns
WHERE e.kind = 'zone_enter'"""

_ZONE_DWELL = """
CREATE VIEW zone_dwell AS
SELECT run_id, stream_id, zone, class_name, COUNT(*) AS visits, COUNT(exited_ts_ns) AS ended,
       AVG(dwell_s) AS mean_dwell_s, MIN(dwell_s) AS min_dwell_s, MAX(dwell_s) AS max_dwell_s
FROM zone_visits GROUP BY run_id, stream_id, zone, class_name"""

_EVENT_COUNTS = """
CREATE VIEW event_counts AS
SELECT run_id, stream_id, kind, rule, class_name, substr(wall_time, 1, 10) AS day,
       substr(wall_time, 1, 13) || ':00:00Z' AS hour, COUNT(*) AS events
FROM events_named GROUP BY 1, 2, 3, 4, 5, 6, 7"""


def _field(dialect: str, key: str, sql_type: str | None = None, table: str = "") -> str:
    """The payload's `key`: SQLite's json_extract gives JSON numbers as numbers; PostgreSQL's ->> gives text,
    cast to `sql_type` (a number's type: "DOUBLE PRECISION", or "BIGINT" for integers). A field of `sql_type`
    that is not such a JSON number (text, an object, 1.5 or 1e19 for BIGINT) is NULL in both."""
    integer = sql_type == "BIGINT"
    if dialect == "sqlite":
        value = f"json_extract({table}payload, '$.{key}')"
        if not sql_type:
            return value
        kinds = "'integer'" if integer else "'integer', 'real'"
        return f"CASE WHEN json_type({table}payload, '$.{key}') IN ({kinds}) THEN {value} END"
    value = f"({table}payload ->> '{key}')"
    if not sql_type:
        return value
    number = f"jsonb_typeof({table}payload -> '{key}') = 'number'"
    if not integer:
        return f"CASE WHEN {number} THEN CAST({value} AS {sql_type}) END"
    # digits (jsonb writes 1e5 as 100000) that fit in a BIGINT: 19 of them for a time in ns since 1970; the inner
    # CASE casts only what the outer one found to be digits (the operands of an AND may be evaluated in any order)
    fits = f"CAST({value} AS NUMERIC) BETWEEN {-2**63} AND {2**63 - 1}"
    digits = f"{value} ~ '^-?[0-9]{{1,19}}$'"
    return f"CASE WHEN {number} AND {digits} THEN CASE WHEN {fits} THEN CAST({value} AS BIGINT) END END"


def _wall_time(dialect: str) -> str:
    """`wall_ns` as ISO 8601 UTC text to the millisecond, in integer arithmetic (no float rounding)."""
    if dialect == "sqlite":
        seconds = "strftime('%Y-%m-%dT%H:%M:%S', wall_ns / 1000000000, 'unixepoch')"
        millis = "printf('%03d', (wall_ns / 1000000) % 1000)"
    else:
        seconds = "to_char(to_timestamp(wall_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        millis = "lpad(CAST((wall_ns / 1000000) % 1000 AS TEXT), 3, '0')"
    return f"{seconds} || '.' || {millis} || 'Z'"


def view_statements(dialect: str, replace: bool = False) -> list[str]:
    """DROP and CREATE of every view for `dialect`, in dependency order; `replace`: on PostgreSQL, CREATE OR REPLACE
    instead (the same columns, new definitions), so views of the owner's own that read them stay."""
    named = _EVENTS_NAMED.format(
        wall_time=_wall_time(dialect), zone=_field(dialect, "zone"), line=_field(dialect, "line"),
        direction=_field(dialect, "direction"), dwell_s=_field(dialect, "dwell_s", "DOUBLE PRECISION"),
        reason=_field(dialect, "reason"))
    visits = _ZONE_VISITS.format(x_entered_ns=_field(dialect, "entered_ns", "BIGINT", "x."))
    creates = [named, _LINE_CROSSINGS, _LINE_COUNTS, visits, _ZONE_DWELL, _EVENT_COUNTS]
    if replace and dialect == "postgres":
        return [sql.strip().replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1) for sql in creates]
    drops = [f"DROP VIEW IF EXISTS {view}" for view in reversed(VIEWS)]
    return [*drops, *(sql.strip() for sql in creates)]
