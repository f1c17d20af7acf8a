"""The answers `run_pipeline.py query` gives, read from the storage views (`views.py`) on SQLite or PostgreSQL.

Each answer is a list of rows (dicts, in column order) per run and stream: crossings per line, direction,
class and time bucket (`line_counts`); zone visits and dwell statistics (`zone_stats`); events per kind,
rule and time bucket (`event_counts`); the runs themselves (`run_list`). `Filters` say which runs, streams,
classes and host-time span; `Buckets` cut time into local buckets of a time zone.

The database groups rows per UTC minute; the minutes are then added up here into buckets of `Buckets.tz`'s
local time, so a day is a local day, daylight saving time included.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import ConfigError, SinkError
from pipeline.masking import mask_url
from pipeline.sinks.storage.query import Runs, Target, select_rows, where_runs
from pipeline.sinks.storage.schema import SCHEMA_VERSION

NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
MINUTES_PER_DAY = 1440
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NS_RANGE = (-2**63, 2**63 - 1)  # what a 64-bit column holds: stored times are all inside it


@dataclass(frozen=True)
class Filters:
    """Which rows an answer counts. run: as in `query` (None the latest run, an id, ids, `ALL_RUNS`).
    streams, classes: stream ids and class names (empty: all); lines, zones: the lines `line_counts` and the
    zones `zone_stats` answer about (empty: all). since_ns, until_ns: host time (ns since the epoch) from,
    and before; a zone visit counts by when it began. instances: only runs of these instances of a fleet
    (empty: all; with `run` None, the latest run of any of them)."""

    run: Runs = None
    streams: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    instances: tuple[str, ...] = ()

    def clause(self, time_column: str, *more: tuple[str, tuple[str, ...]]) -> tuple[str, tuple]:
        """` WHERE ...` and its parameters for a view whose host time is `time_column`; more: further
        `(column, values)` to keep (empty values: all)."""
        clause, params = where_runs(self.run, (f"{time_column} >= ?", self.since_ns),
                                    (f"{time_column} < ?", self.until_ns), instances=self.instances)
        for column, values in (("stream_id", self.streams), ("class_name", self.classes), *more):
            if values:
                clause += f"{' AND' if clause else ' WHERE'} {column} IN ({', '.join('?' * len(values))})"
                params += tuple(values)
        return clause, params


@dataclass(frozen=True)
class Buckets:
    """Time buckets of `minutes` (dividing a day: 15, 60, 1440 = a day) of local time in `tz`."""

    minutes: int
    tz: ZoneInfo

    def start(self, minute: int) -> datetime:
        """The local start of the bucket holding `minute` (minutes since the epoch, UTC)."""
        local = datetime.fromtimestamp(minute * 60, self.tz)
        if self.minutes == MINUTES_PER_DAY:
            return datetime.combine(local.date(), time(), self.tz)
        of_day = (local.hour * 60 + local.minute) // self.minutes * self.minutes
        return local.replace(hour=of_day // 60, minute=of_day % 60)

    def label(self, start: datetime) -> str:
        """`2025-03-14` for days, else the local start with its offset: `2025-03-14T09:00+01:00`."""
        return start.date().isoformat() if self.minutes == MINUTES_PER_DAY else start.isoformat(timespec="minutes")


def parse_bucket(text: str) -> int:
    """`15m`, `1h`, `1d` -> minutes; ConfigError unless it divides a day into whole buckets."""
    units = {"m": 1, "h": 60, "d": MINUTES_PER_DAY}
    number, unit = text[:-1], text[-1:].lower()
    minutes = int(number) * units[unit] if number.isdigit() and unit in units else 0
    if not minutes or MINUTES_PER_DAY % minutes:
        raise ConfigError(f"--bucket {text!r}: give minutes, hours or a day that divide a day, like 15m, 1h or 1d")
    return minutes


def parse_zone(name: str) -> ZoneInfo:
    """An IANA time zone (`Europe/Paris`, `UTC`); ConfigError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name!r}: not a time zone; use an IANA name like UTC or Europe/Paris") from None


def parse_time(text: str, tz: ZoneInfo, today: date | None = None) -> int:
    """ISO 8601 (`2025-03-14`, `2025-03-14T08:00`, `2025-03-14T08:00:00Z`) or `today` -> ns since the epoch.
    A time without an offset (and a date: its midnight) is local time in `tz`. today: the date `today`
    names (default: today in `tz`). Times before 1678 or after 2261 (beyond 64 bits of nanoseconds) are clamped
    to the 64-bit range, which holds every stored time, so they still mean "from the start" and "to the end"."""
    if text == "today":
        moment = datetime.combine(today or datetime.now(tz).date(), time(), tz)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not an ISO 8601 date or time (like 2025-03-14 or "
                              "2025-03-14T08:00:00Z), nor `today`") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    return min(max((moment - _EPOCH) // timedelta(microseconds=1) * 1000, _NS_RANGE[0]), _NS_RANGE[1])


def local_time(ns: int | None, tz: ZoneInfo) -> str | None:
    """Host time `ns` as local ISO 8601 in `tz`, to the second; None stays None."""
    return None if ns is None else datetime.fromtimestamp(ns // NS_PER_S, tz).isoformat(timespec="seconds")


def require_current_schema(target: Target) -> None:
    """SinkError unless `target` has this version's schema (and so its views): an older one is upgraded by
    opening it with a storage sink, which reading here does not do; a newer one needs a newer streamweave."""
    rows = select_rows(target, "SELECT value FROM streamweave_meta WHERE key = 'schema_version'")
    found = int(rows[0][0]) if rows else None
    if found is not None and found > SCHEMA_VERSION:
        raise SinkError(f"{mask_url(str(target))} has schema version {found}, written by a newer streamweave; this "
                        f"one reads version {SCHEMA_VERSION}: upgrade streamweave to read it")
    if found != SCHEMA_VERSION:
        raise SinkError(f"{mask_url(str(target))} has schema version {found}, this streamweave reads version "
                        f"{SCHEMA_VERSION}: run the pipeline on it once (its storage sink upgrades it), then ask again")


COLUMNS = {  # of each answer's rows, in order; a CSV answer with no rows still has them as its header
    "runs": ("run_id", "started", "ended", "instance", "config_hash", "version"),
    "lines": ("run_id", "stream_id", "line", "direction", "class_name", "bucket", "crossings"),
    "zones": ("run_id", "stream_id", "zone", "class_name", "visits", "inside", "mean_dwell_s", "median_dwell_s",
              "max_dwell_s"),
    "events": ("run_id", "stream_id", "kind", "rule", "bucket", "events"),
}


def _bucketed(rows: list[tuple], buckets: Buckets, names: tuple[str, ...]) -> list[dict]:
    """Rows `(*key, minute, count)` added up per key and bucket, ordered by key, then time. Buckets are keyed by
    their start in UTC: local starts that differ only in `fold` (the hour repeated when clocks go back) compare
    equal, and would merge two hours into one."""
    totals: dict[tuple, int] = {}
    for *key, minute, count in rows:
        group = (*key, buckets.start(int(minute)).astimezone(timezone.utc))
        totals[group] = totals.get(group, 0) + int(count)
    ordered = sorted(totals.items(), key=lambda item: ([str(v) for v in item[0][:-1]], item[0][-1]))
    return [dict(zip(names, (*key[:-1], buckets.label(key[-1].astimezone(buckets.tz)), count)))
            for key, count in ordered]


def line_counts(target: Target, filters: Filters, buckets: Buckets) -> list[dict]:
    """Crossings per run, stream, line, direction, class and bucket (view `line_crossings`)."""
    clause, params = filters.clause("wall_ns", ("line", filters.lines))
    rows = select_rows(target, "SELECT run_id, stream_id, line, direction, class_name, "
                               f"wall_ns / {NS_PER_MINUTE}, COUNT(*) FROM line_crossings{clause} "
                               "GROUP BY 1, 2, 3, 4, 5, 6", params)
    return _bucketed(rows, buckets, COLUMNS["lines"])


def event_counts(target: Target, filters: Filters, buckets: Buckets) -> list[dict]:
    """Events per run, stream, kind, rule and bucket (view `events_named`)."""
    clause, params = filters.clause("wall_ns")
    rows = select_rows(target, f"SELECT run_id, stream_id, kind, rule, wall_ns / {NS_PER_MINUTE}, COUNT(*) "
                               f"FROM events_named{clause} GROUP BY 1, 2, 3, 4, 5", params)
    return _bucketed(rows, buckets, COLUMNS["events"])


def zone_stats(target: Target, filters: Filters) -> list[dict]:
    """Per run, stream, zone and class (view `zone_visits`): visits begun, those still inside (not ended
    when the rows were read) and the dwell of the ended ones in seconds: mean, median, max."""
    clause, params = filters.clause("entered_wall_ns", ("zone", filters.zones))
    rows = select_rows(target, "SELECT run_id, stream_id, zone, class_name, exited_ts_ns, dwell_s FROM zone_visits"
                               f"{clause} ORDER BY run_id, stream_id, zone, class_name", params)
    groups: dict[tuple, list] = {}
    for *key, exited, dwell_s in rows:
        groups.setdefault(tuple(key), []).append((exited, dwell_s))
    answers = []
    for key, visits in groups.items():
        inside = sum(exited is None for exited, _ in visits)
        ended = [float(dwell) for exited, dwell in visits if exited is not None and dwell is not None]
        stats = (round(statistics.fmean(ended), 3), round(statistics.median(ended), 3), max(ended)) if ended else (
            None, None, None)
        answers.append(dict(zip(COLUMNS["zones"], (*key, len(visits), inside, *stats))))
    return answers


def zone_counts(target: Target, filters: Filters) -> list[dict]:
    """Per stream, zone and class, over every run `filters` selects: visits begun and those still inside, counted
    by the database (what the console asks at each refresh: `zone_stats` reads every visit)."""
    clause, params = filters.clause("entered_wall_ns", ("zone", filters.zones))
    rows = select_rows(target, "SELECT stream_id, zone, class_name, COUNT(*), COUNT(*) - COUNT(exited_ts_ns) "
                               f"FROM zone_visits{clause} GROUP BY stream_id, zone, class_name", params)
    return [dict(zip(("stream_id", "zone", "class_name", "visits", "inside"), row)) for row in rows]


def run_list(target: Target, filters: Filters, tz: ZoneInfo) -> list[dict]:
    """The runs `filters.run` selects, oldest first: run_id, started and ended (local time in `tz`; ended is
    None while it runs or after a kill), instance (which instance of a fleet ran it; None before instances were
    stored), config_hash, version."""
    clause, params = where_runs(filters.run, instances=filters.instances)
    rows = select_rows(target, "SELECT run_id, started_ns, ended_ns, instance, config_hash, version FROM runs"
                               f"{clause} ORDER BY started_ns, run_id", params)
    return [dict(zip(COLUMNS["runs"], (run_id, local_time(started, tz), local_time(ended, tz), *rest)))
            for run_id, started, ended, *rest in rows]


def summary(target: Target, filters: Filters, buckets: Buckets) -> dict[str, list[dict]]:
    """Every answer at once: runs, lines, zones, events."""
    return {"runs": run_list(target, filters, buckets.tz), "lines": line_counts(target, filters, buckets),
            "zones": zone_stats(target, filters), "events": event_counts(target, filters, buckets)}

