"""`run_pipeline.py query [CONFIG] [WHAT] [filters]`: answers from stored results (`answers.py`).

WHAT: `summary` (the default: runs, lines, zones, events), `lines`, `zones`, `events` or `runs`. It reads
the first storage sink of CONFIG (sqlite or postgres), or `--db PATH|DSN`; the latest run unless `--run ID`
or `--all-runs`; `--instance NAME` keeps the runs of one instance of a fleet (the runs list names each run's).
Exit codes: 0 answered, 1 nothing to read (no database, no such run), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import TextIO

from pipeline.errors import ConfigError, PipelineError
from pipeline.sinks.storage import answers
from pipeline.sinks.storage.answers import Buckets, Filters
from pipeline.sinks.storage.query import ALL_RUNS, storage_target
from pipeline.masking import mask_url

WHATS = ("summary", "lines", "zones", "events", "runs")
TITLES = {"runs": "Runs", "lines": "Line crossings", "zones": "Zone visits (dwell in seconds)", "events": "Events"}


def build_parser(prog: str = "run_pipeline.py query") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [CONFIG] [{" + ",".join(WHATS) + "}] [options]",
        description="Answers from a pipeline's stored results: crossings per line, direction, class and time "
                    "bucket; zone visits and dwell; events by kind; per stream and run.")
    parser.add_argument("words", nargs="*", metavar="CONFIG WHAT",
                        help=f"the config whose storage sink to read, then what to answer: {', '.join(WHATS)} "
                             "(default summary)")
    parser.add_argument("--db", metavar="PATH|DSN", help="read this SQLite file or PostgreSQL DSN (postgresql://... "
                                                        "or \"host=... dbname=...\") instead")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--run", action="append", metavar="ID", help="this run (again for several); default: the latest")
    runs.add_argument("--all-runs", action="store_true", help="every run, each apart")
    parser.add_argument("--instance", action="append", default=[], metavar="NAME",
                        help="only runs of this instance of a fleet (runtime.instance; again for more); without "
                             "--run or --all-runs, its latest run")
    parser.add_argument("--stream", action="append", default=[], metavar="ID", help="only this stream (again for more)")
    parser.add_argument("--line", action="append", default=[], metavar="NAME",
                        help="lines: only this line (again for more)")
    parser.add_argument("--zone", action="append", default=[], metavar="NAME",
                        help="zones: only this zone (again for more)")
    parser.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                        help="only this class, by name (again for more)")
    parser.add_argument("--since", metavar="TIME", help="from this host time: ISO 8601 or `today` (local to --tz "
                                                        "without an offset)")
    parser.add_argument("--until", metavar="TIME", help="before this host time (as --since)")
    parser.add_argument("--bucket", default="1h", help="time bucket: minutes, hours or 1d (default 1h)")
    parser.add_argument("--tz", default="UTC", help="time zone of buckets, times and dates (default UTC)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return parser


def query_command(argv: list[str], out: TextIO | None = None, prog: str = "run_pipeline.py query") -> int:
    """Entry point of the `query` subcommand; writes the answer to `out` (stdout) and returns the exit code.
    prog: the command as run, for its usage line."""
    out = out or sys.stdout
    args = build_parser(prog).parse_args(argv)
    try:
        what, target = _what_and_target(args.words, args.db)
        tz = answers.parse_zone(args.tz)
        filters = Filters(
            run=ALL_RUNS if args.all_runs else (args.run[0] if args.run and len(args.run) == 1 else args.run),
            streams=tuple(args.stream), classes=tuple(args.classes), lines=tuple(args.line), zones=tuple(args.zone),
            since_ns=None if args.since is None else answers.parse_time(args.since, tz),
            until_ns=None if args.until is None else answers.parse_time(args.until, tz),
            instances=tuple(args.instance))
        buckets = Buckets(answers.parse_bucket(args.bucket), tz)
    except ConfigError as exc:
        print(f"query: {exc}", file=sys.stderr)
        return 2
    try:
        sections = _answer(what, target, filters, buckets)
    except PipelineError as exc:
        print(f"query: {exc}", file=sys.stderr)
        return 1
    if not sections["runs"]:
        shown = mask_url(target)
        print(f"query: no such run in {shown}; `query --db {shown} runs --all-runs` lists them", file=sys.stderr)
        return 1
    write(sections, what, args.format, out, caption=f"per {args.bucket}, {args.tz}")
    return 0


def _what_and_target(words: list[str], db: str | None) -> tuple[str, str]:
    """(what, database) from `[CONFIG] [WHAT]` and `--db`."""
    what = words.pop() if words and words[-1] in WHATS else "summary"
    if len(words) > 1 or (words and words[0] in WHATS):
        raise ConfigError(f"expected [CONFIG] [WHAT], got {' '.join(words)!r}; WHAT is one of {', '.join(WHATS)}")
    if db is not None:
        return what, db
    if not words:
        raise ConfigError("name a config (its storage sink is read) or give --db PATH|DSN")
    from pipeline.config import load_config  # noqa: PLC0415 - only when a config is named

    config = load_config(words[0])
    target = storage_target(config.sinks)
    if target is None:
        raise ConfigError(f"{words[0]}: no sqlite or postgres sink to read; add one, or give --db")
    return what, target


def _answer(what: str, target: str, filters: Filters, buckets: Buckets) -> dict[str, list[dict]]:
    """The sections `what` shows, and always `runs` (which runs they cover)."""
    answers.require_current_schema(target)
    if what == "summary":
        return answers.summary(target, filters, buckets)
    sections = {"runs": answers.run_list(target, filters, buckets.tz)}
    if what == "lines":
        sections["lines"] = answers.line_counts(target, filters, buckets)
    elif what == "zones":
        sections["zones"] = answers.zone_stats(target, filters)
    elif what == "events":
        sections["events"] = answers.event_counts(target, filters, buckets)
    return sections


def write(sections: dict[str, list[dict]], what: str, fmt: str, out: TextIO, caption: str = "") -> None:
    """The answer to `what` (a section, or every one for `summary`) as JSON (a list, or an object of lists),
    CSV (one table; for `summary` one per section, `# name` before each) or text tables, where one run is
    named in a heading instead of a column. caption: how lines and events are bucketed, for the tables."""
    shown = sections if what == "summary" else {what: sections[what]}
    if fmt == "json":
        json.dump(shown if what == "summary" else shown[what], out, indent=2)
        out.write("\n")
        return
    if fmt == "csv":
        for i, (name, rows) in enumerate(shown.items()):
            if what == "summary":
                out.write(("\n" if i else "") + f"# {name}\n")
            _csv(rows, answers.COLUMNS[name], out)
        return
    one_run = len(sections["runs"]) == 1 and what != "runs"
    if one_run:
        run = sections["runs"][0]
        out.write(f"run {run['run_id']}: {run['started']} to {run['ended'] or '(running, or killed)'}\n")
    for name, rows in shown.items():
        if name == "runs" and one_run:
            continue
        title = TITLES[name] + (f" ({caption})" if caption and name in ("lines", "events") else "")
        out.write(f"\n{title}\n")
        out.write(text_table([{k: v for k, v in row.items() if not (one_run and k == "run_id")} for row in rows]))


def _csv(rows: list[dict], columns: tuple[str, ...], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def text_table(rows: list[dict]) -> str:
    """Aligned text columns (numbers to the right), or `(none)`."""
    if not rows:
        return "  (none)\n"
    cells = [[_cell(v) for v in row.values()] for row in rows]
    header = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    numeric = [all(isinstance(row[h], (int, float)) or row[h] is None for row in rows) for h in header]

    def line(values: list[str]) -> str:
        return "  " + "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(header), *(line(c) for c in cells)]) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
