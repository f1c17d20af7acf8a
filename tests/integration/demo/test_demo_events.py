"""Events as people and programs read them: every event the demo emits, of every kind, validates against
docs/event.schema.json, names its class, its capture time in UTC, its run and its media files, and reads the
same from storage (the `events_named` view) as from the event log."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from pipeline.sinks.outputs.payload import EVENT_FORMAT, wall_time
from pipeline.sinks.storage.query import connect
from samples.world import CLASS_NAMES
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "docs" / "event.schema.json").read_text())
KINDS = {"zone_enter", "zone_exit", "line_cross", "alert", "mark", "speeding"}  # speeding: a `stages:` plugin's


def test_the_schema_is_valid_and_names_the_format_the_code_writes():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == f"urn:streamweave:event:{EVENT_FORMAT}"
    assert SCHEMA["additionalProperties"] is False
    assert set(SCHEMA["$defs"]) == KINDS - {"speeding"} | {"plugin"}


def test_every_event_the_demo_emits_of_every_kind_validates_against_the_schema(demo_runs):
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    events = demo_runs.logged()
    for event in events:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)]
        assert not errors, (event, errors)
    assert set(Counter(e["kind"] for e in events)) == KINDS
    assert {e["payload"]["when"] for e in events if e["kind"] == "alert"} == {"enter", "dwell", "exit", "cross",
                                                                              "occupancy"}


def test_the_schema_refuses_a_key_too_many_and_a_built_in_kind_without_its_payload(demo_runs):
    validator = Draft202012Validator(SCHEMA)
    crossing = next(e for e in demo_runs.logged() if e["kind"] == "line_cross")
    assert not validator.is_valid({**crossing, "extra": 1})
    assert not validator.is_valid({**crossing, "payload": {"line": crossing["payload"]["line"]}})  # no direction
    assert not validator.is_valid({**crossing, "class_name": None})  # a class id without its name
    assert validator.is_valid({**crossing, "kind": "wrong_way", "payload": {"anything": [1]}})  # a plugin's kind


def test_events_name_their_class_capture_time_run_and_the_files_made_of_them(demo_runs):
    for run_id in demo_runs.run_ids:
        events = demo_runs.logged(run_id)
        assert events
        for event in events:
            expected_name = None if event["class_id"] < 0 else CLASS_NAMES[event["class_id"]]
            assert event["class_name"] == expected_name and event["wall_time"] == wall_time(event["wall_ns"])
        snapshots = [Path(e["snapshot"]) for e in events if e["snapshot"]]
        assert snapshots and all(path.is_absolute() and path.exists() for path in snapshots)
        assert {e["rule"] for e in events if e["snapshot"]} >= {"any-dwell", "crosswalk-vehicle", "mark"}
        clips = [Path(e["clip"]) for e in events if e["clip"] and e["stream_id"] == "cam-1"]  # the H.264 camera
        assert clips and all(path.exists() for path in clips)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_stored_events_read_the_same_through_events_named_as_in_the_event_log(demo_runs, backend):
    target = demo_runs.sqlite if backend == "sqlite" else demo_runs.postgres
    columns = ("event_id", "run_id", "kind", "class_name", "wall_time", "snapshot", "clip", "zone", "line",
               "direction", "dwell_s", "reason")
    with connect(target) as (conn, _):
        stored = {row[0]: dict(zip(columns, row)) for row in conn.execute(
            f"SELECT {', '.join(columns)} FROM events_named").fetchall()}
    logged = demo_runs.logged()
    assert len(stored) == len(logged)
    for event in logged:
        payload = event["payload"]
        expected = {**{k: event[k] for k in columns[:7]}, "zone": payload.get("zone"), "line": payload.get("line"),
                    "direction": payload.get("direction"), "dwell_s": payload.get("dwell_s"),
                    "reason": payload.get("reason")}
        assert stored[event["event_id"]] == expected
