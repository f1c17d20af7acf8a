"""`run_pipeline.py fleet`: the cameras of a fleet (`runtime.cluster`) in its database.

    fleet import FILE --dsn DSN     the `streams:` of a YAML file into the fleet (insert or replace by id)
    fleet list --dsn DSN            cameras with their holder, token and expiry; instances; latest handoffs
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from pipeline.cluster.cameras import read_streams
from pipeline.cluster.store import FleetStore
from pipeline.errors import ConfigError, PipelineError
from pipeline.masking import mask_url
from pipeline.sinks.storage.cli import text_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description="The cameras of a fleet of instances that share "
                                     "them through PostgreSQL (runtime.cluster).")
    sub = parser.add_subparsers(dest="action", required=True)
    imports = sub.add_parser("import", help="insert or replace the cameras of a YAML file's `streams:` in the fleet")
    imports.add_argument("file")
    listing = sub.add_parser("list", help="cameras with holder, lease token and expiry; instances; handoffs")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    for each in (imports, listing):
        each.add_argument("--dsn", required=True, help="the fleet's postgresql:// DSN (runtime.cluster.dsn)")
    return parser


def fleet_command(argv: list[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        entries = read_streams(args.file) if args.action == "import" else []
    except ConfigError as exc:
        print(f"fleet import: {exc}", file=sys.stderr)
        return 2
    store = FleetStore(args.dsn)
    try:
        store.connect()
        if args.action == "import":
            store.put_cameras(entries)
            print(f"{len(entries)} cameras imported into {mask_url(args.dsn)}", file=out)
            return 0
        state = store.state()
    except PipelineError as exc:
        print(f"fleet {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "json":
        json.dump(state, out, indent=2)
        out.write("\n")
        return 0
    out.write("cameras\n" + text_table([{key: c[key] for key in ("id", "instance", "token", "expires_in_s")}
                                    for c in state["cameras"]]))
    out.write("\ninstances\n" + text_table([{key: i[key] for key in ("name", "capacity", "normal_cap", "weight", "url",
                                                                  "heartbeat_age_s")} for i in state["instances"]]))
    out.write("\nhandoffs (latest first)\n" + text_table([{key: h[key] for key in (
        "camera", "from_instance", "to_instance", "reason", "lease_ended_at", "gap_s")} for h in state["handoffs"]]))
    return 0
