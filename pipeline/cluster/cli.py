"""`run_pipeline.py fleet`: the cameras, zones, lines and alert rules of a fleet (`runtime.cluster`) in its
database.

    fleet import FILE --dsn DSN     the `streams:` (by id), `zones:`, `lines:` and `alerts:` (by name) of a YAML
                                    file into the fleet, inserted or replaced, all in one transaction
    fleet list --dsn DSN            cameras with their holder, token and expiry; instances; latest handoffs;
                                    zones, lines and alert rules
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from pipeline.cluster import analytics
from pipeline.cluster.cameras import read_fleet_file, read_streams
from pipeline.cluster.store import FleetStore
from pipeline.errors import ConfigError, PipelineError
from pipeline.masking import mask_url
from pipeline.sinks.storage.cli import text_table


def build_parser(prog: str = "run_pipeline.py fleet") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="The cameras, zones, lines and alert rules of a fleet "
                                     "of instances that share them through PostgreSQL (runtime.cluster).")
    sub = parser.add_subparsers(dest="action", required=True)
    imports = sub.add_parser("import", help="insert or replace the cameras (`streams:`), zones, lines and alert "
                             "rules of a YAML file in the fleet")
    imports.add_argument("file")
    listing = sub.add_parser("list", help="cameras with holder, lease token and expiry; instances; handoffs; zones, "
                             "lines and alert rules")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for each in (imports, listing):
        each.add_argument("--dsn", required=True, help="the fleet's postgresql:// DSN (runtime.cluster.dsn)")
    return parser


class Import:
    """What a file brings: its cameras, its zones, lines and rules, and (when it has a `detector:`) the
    classes they may name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = read_fleet_file(self.path)
        self.streams = read_streams(data, self.path)
        self.doc = {section: data.get(section) or [] for section in analytics.SECTIONS}
        for section, items in self.doc.items():
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise ConfigError(f"{self.path}: {section}: must be a list of entries with their keys, as in a config")
            names = [item.get("name") for item in items]
            if None in names:
                raise ConfigError(f"{self.path}: {section} -> {names.index(None)} -> name: missing; the fleet keeps "
                                  "its zones, lines and alert rules by name")
            repeated = sorted({str(n) for n in names if names.count(n) > 1})
            if repeated:
                raise ConfigError(f"{self.path}: {section}: names {repeated} appear more than once")
        if not self.streams and not any(self.doc.values()):
            raise ConfigError(f"{self.path}: nothing to import; write the cameras under `streams:` and the zones, "
                              "lines and alert rules under `zones:`, `lines:` and `alerts:`, as in a config")
        self.classes = _detector_classes(self.path, data["detector"]) if "detector" in data else None

    def merge(self, doc: analytics.Document) -> None:
        for section, items in self.doc.items():
            for item in items:
                analytics.put(doc, section, item.get("name"), item)

    def check(self, doc: analytics.Document, cameras: set[str]) -> analytics.Analytics:
        return analytics.validate(doc, cameras, self.classes, f"{self.path}: ")

    def into(self, store: FleetStore) -> None:
        """All of it in one transaction: a refused zone, line or rule imports no camera either."""
        work = analytics.changing(self.merge, self.check) if any(self.doc.values()) else None
        store.put_cameras(self.streams, then=work)


def _detector_classes(path: Path, entry: object) -> tuple[list[str], str]:
    """The class names of the file's detector (its model is read), which its zones, lines and rules may name."""
    from pipeline.config.models import DetectorConfig  # noqa: PLC0415 - only for a file with a detector
    from pipeline.runtime.preflight import describe, model_problems  # noqa: PLC0415

    try:
        detector = DetectorConfig.model_validate(entry)
    except ValidationError as exc:
        raise ConfigError(f"{path}: detector: {exc.errors()[0]['msg']}") from None
    problems = []
    names = model_problems(detector, detector.engine, problems)
    if names is None:
        raise ConfigError(f"{path}: {describe(problems)}")
    return names[0], f"the model {detector.model}"


def fleet_command(argv: list[str], out: TextIO | None = None, prog: str = "run_pipeline.py fleet") -> int:
    """Entry point of the `fleet` subcommand (`prog`: the command as run); returns the process exit status."""
    out = out or sys.stdout
    args = build_parser(prog).parse_args(argv)
    store = FleetStore(args.dsn)
    try:
        if args.action == "import":
            file = Import(args.file)
            store.connect()
            file.into(store)
            print(f"{len(file.streams)} cameras, " + ", ".join(f"{len(file.doc[s])} {s}" for s in analytics.SECTIONS)
                  + f" imported into {mask_url(args.dsn)}", file=out)
            return 0
        store.connect()
        state = store.state()
        version, doc = store.tx(analytics.read)
    except ConfigError as exc:
        print(f"fleet {args.action}: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"fleet {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "json":
        json.dump({**state, "analytics": {"version": version, **doc}}, out, indent=2)
        out.write("\n")
        return 0
    out.write("cameras\n" + text_table([{key: c[key] for key in ("id", "instance", "token", "expires_in_s")}
                                    for c in state["cameras"]]))
    out.write("\ninstances\n" + text_table([{key: i[key] for key in ("name", "capacity", "normal_cap", "weight", "url",
                                                                  "heartbeat_age_s")} for i in state["instances"]]))
    out.write("\nhandoffs (latest first)\n" + text_table([{key: h[key] for key in (
        "camera", "from_instance", "to_instance", "reason", "lease_ended_at", "gap_s")} for h in state["handoffs"]]))
    out.write(f"\nzones, lines and alert rules (version {version})\n" + text_table([
        {"section": section, "name": item["name"], "streams": ",".join(item.get("streams") or ["(all)"]),
         "classes": ",".join(item.get("classes") or ["(all)"]),
         "when": " ".join(str(item[k]) for k in ("when", "zone", "line") if item.get(k))}
        for section in analytics.SECTIONS for item in doc[section]]))
    return 0
