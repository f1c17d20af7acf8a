"""The fleet's zones, lines and alert rules in a real PostgreSQL: changed from two instances' connections at once
neither change is lost; a document that would not validate as a config's sections is refused naming the key,
with nothing written; `fleet import` brings a file's zones, lines and rules with its cameras (or, refused,
neither) and `fleet list` shows them."""
from __future__ import annotations

import io
import threading
from types import SimpleNamespace

import psycopg
import pytest
import yaml

from pipeline.cluster import analytics
from pipeline.cluster.analytics import FleetAnalytics
from pipeline.cluster.cameras import FleetCameras
from pipeline.cluster.cli import fleet_command
from pipeline.cluster.coordinator import Coordinator
from pipeline.cluster.store import FleetStore
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import ConfigError, NoSuchItem, PipelineError
from pipeline.service.control import Control
from tests.integration.cluster.test_fleet_cameras import waiting_for_a_lock
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.support.waiting import wait_until

DOOR = {"polygon": [[0, 0], [20, 0], [20, 40]], "classes": ["person"]}
COCO = (["person", "bicycle", "car"], "the test's detector")


def check(doc, cameras):
    return analytics.validate(doc, cameras, COCO)


def put(target: FleetAnalytics, section: str, name: str, entry: dict) -> bool:
    return target.change(lambda doc: analytics.put(doc, section, name, entry), check)


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT section, name FROM fleet_analytics ORDER BY position").fetchall()


def version(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT version FROM fleet_analytics_version").fetchone()[0]


@pytest.fixture
def two(postgres_dsn):
    instances = [FleetAnalytics(FleetStore(postgres_dsn)) for _ in range(2)]
    for each in instances:
        each.store.connect()
    yield instances
    for each in instances:
        each.close()


def test_zones_set_from_two_instances_at_once_are_both_kept_in_order(two, postgres_dsn):
    a, b = two
    entered, go = threading.Event(), threading.Event()

    def held_open(doc, cameras):  # a's change holds the document while b's arrives
        entered.set()
        go.wait(10)
        return check(doc, cameras)

    first = threading.Thread(target=a.change, args=(lambda doc: analytics.put(doc, "zones", "door", DOOR), held_open))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=put, args=(b, "zones", "dock", {**DOOR, "classes": None}))
    second.start()
    assert wait_until(lambda: waiting_for_a_lock(postgres_dsn), timeout=10)  # b waits for a: it reads a's result
    go.set()
    first.join(10)
    second.join(10)
    assert rows(postgres_dsn) == [("zones", "door"), ("zones", "dock")] and version(postgres_dsn) == 2
    assert [z["name"] for z in b.document()["zones"]] == ["door", "dock"]

    assert put(a, "zones", "door", {**DOOR, "min_score": 0.5}) is False  # replaced in its place
    assert a.document()["zones"][0] == {"name": "door", **DOOR, "min_score": 0.5}
    b.change(lambda doc: analytics.remove(doc, "zones", "dock"), check)
    assert rows(postgres_dsn) == [("zones", "door")] and version(postgres_dsn) == 4
    with pytest.raises(NoSuchItem, match="zones: no entry named 'dock' in the fleet; there are: \\['door'\\]"):
        b.change(lambda doc: analytics.remove(doc, "zones", "dock"), check)


@pytest.mark.parametrize("section, name, entry, refused", [
    ("alerts", "loiter", {"when": "dwell", "zone": "hall", "min_seconds": 5},
     "alerts -> loiter -> zone: rule 'loiter' needs a zone; defined zones: ['door']"),
    ("alerts", "loiter", {"when": "dwell", "zone": "door", "classes": ["car"]},
     "alerts -> loiter -> classes: ['car'] never reach rule 'loiter': its zone 'door' counts only ['person']"),
    ("zones", "yard", {**DOOR, "classes": ["unicorn"]},
     "zones -> yard -> classes: unknown class ['unicorn']; the detector's classes (the test's detector) are: person"),
    ("zones", "yard", {**DOOR, "streams": ["cam-9"]}, "zones -> yard -> streams: unknown stream 'cam-9'; defined "
     "streams: ['cam-1']"),
    ("lines", "gate", {"start": [0, 0], "end": [0, 0.5]}, "lines -> gate -> end: is [0.0, 0.5], within a pixel"),
    ("zones", "door", {"polygon": [[0, 0], [20, 0]]}, "zones -> door -> polygon: List should have at least 3 items"),
])
def test_an_entry_that_would_not_validate_in_a_config_is_refused_naming_its_key_and_nothing_is_written(
        two, postgres_dsn, section, name, entry, refused):
    a, _ = two
    a.store.put_cameras([{"id": "cam-1", "url": "rtsp://cam-1.local/stream"}])
    put(a, "zones", "door", DOOR)
    before = (rows(postgres_dsn), version(postgres_dsn))
    with pytest.raises(ConfigError) as caught:
        put(a, section, name, entry)
    assert refused in str(caught.value)
    assert (rows(postgres_dsn), version(postgres_dsn)) == before
    assert a.document()["zones"] == [{"name": "door", **DOOR}]


def test_a_camera_a_zone_names_is_removed_only_once_the_zone_lets_go(two):
    a, _ = two
    a.store.put_cameras([{"id": "cam-1", "url": "rtsp://cam-1.local/stream"}])
    put(a, "zones", "door", {**DOOR, "streams": ["cam-1"]})
    with pytest.raises(ConfigError, match=r"stream 'cam-1' is named by zones -> door \(their `streams`\); take it out"):
        a.store.delete_camera("cam-1")
    assert "cam-1" in a.store.cameras()
    put(a, "zones", "door", DOOR)
    assert a.store.delete_camera("cam-1")


FILE = {
    "plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"},
    "streams": [{"id": "cam-1", "url": "fake://cam-1?fps=10&live=1"}, {"id": "cam-2", "url": "fake://cam-2?fps=10&live=1"}],
    "zones": [{"name": "door", "streams": ["cam-1"], "polygon": [[0, 0], [24, 0], [24, 48], [0, 48]],
               "classes": ["person"]}],
    "lines": [{"name": "gate", "start": [30, 0], "end": [30, 48]}],
    "alerts": [{"name": "at-door", "when": "enter", "zone": "door"},
               {"name": "through", "when": "cross", "line": "gate", "classes": ["car"]}],
}


def fleet(dsn: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    return fleet_command([*args, "--dsn", dsn], out), out.getvalue()


def test_fleet_import_brings_a_files_zones_lines_and_rules_and_fleet_list_shows_them(postgres_dsn, tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(FILE, sort_keys=False))
    code, said = fleet(postgres_dsn, "import", str(site))
    assert code == 0 and said.startswith("2 cameras, 1 zones, 1 lines, 2 alerts imported into"), said
    assert rows(postgres_dsn) == [("zones", "door"), ("lines", "gate"), ("alerts", "at-door"), ("alerts", "through")]

    code, listed = fleet(postgres_dsn, "list")
    assert code == 0
    shown = listed.split("zones, lines and alert rules (version 1)\n")[1].splitlines()
    assert [line.split() for line in shown] == [
        ["section", "name", "streams", "classes", "when"], ["zones", "door", "cam-1", "person"],
        ["lines", "gate", "(all)", "(all)"], ["alerts", "at-door", "(all)", "(all)", "enter", "door"],
        ["alerts", "through", "(all)", "car", "cross", "gate"]]

    # a second file adds by name and refers to what the fleet has; a refused one writes nothing, cameras neither
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump({"streams": [{"id": "cam-3", "url": "rtsp://cam-3.local/s"}],
                                    "alerts": [{"name": "crowd", "when": "occupancy", "zone": "door", "min_count": 3}]}))
    assert fleet(postgres_dsn, "import", str(more))[0] == 0
    assert ("alerts", "crowd") in rows(postgres_dsn) and version(postgres_dsn) == 2
    bad = tmp_path / "bad.yaml"
    for text, refused in [
        ({**FILE, "streams": [{"id": "cam-4", "url": "fake://cam-4"}], "alerts": [{**FILE["alerts"][1], "classes": ["unicorn"]}]},
         f"{bad}: alerts -> through -> classes: unknown class ['unicorn']; the detector's classes (the model fake) are"),
        ({"streams": [{"id": "cam-4", "url": "rtsp://cam-4.local/s"}], "alerts": [{"name": "x", "when": "exit", "zone": "hall"}]},
         f"{bad}: alerts -> x -> zone: rule 'x' needs a zone; defined zones: ['door']"),
        ({"zones": [{"name": "hall", "streams": ["cam-9"], "polygon": [[0, 0], [9, 0], [9, 9]]}]},
         f"{bad}: zones -> hall -> streams: unknown stream 'cam-9'; defined streams: ['cam-1', 'cam-2', 'cam-3']"),
        ({"zones": [FILE["zones"][0], FILE["zones"][0]]}, f"{bad}: zones: names ['door'] appear more than once"),
        ({"plugins": ["pipeline.testing"]}, f"{bad}: nothing to import"),
    ]:
        bad.write_text(yaml.safe_dump(text))
        assert fleet(postgres_dsn, "import", str(bad))[0] == 2
        assert refused in capsys.readouterr().err
        assert version(postgres_dsn) == 2 and len(rows(postgres_dsn)) == 5
        assert sorted(FleetStore(postgres_dsn).cameras()) == ["cam-1", "cam-2", "cam-3"]


def test_a_change_is_refused_in_time_while_the_pipeline_is_busy_changing_its_cameras(postgres_dsn):
    """A change is applied inside its transaction, which locks the fleet's rows: it must not wait for a long camera
    start there until the database ends the transaction (`idle_limit_s`), holding other instances' claims back."""
    store = FleetStore(postgres_dsn, idle_limit_s=1.0)
    store.connect()
    starting, started = threading.Event(), threading.Event()

    def reconfigure(config):  # the coordinator starting cameras (decode processes, decoders) with the lock held
        starting.set()
        started.wait(30)

    runner = SimpleNamespace(config=SimpleNamespace(model_copy=lambda update: None), reconfigure=reconfigure,
                             detector=SimpleNamespace(class_names=COCO[0]))
    control = Control(runner, fleet_analytics=FleetAnalytics(store))
    coordinator = threading.Thread(target=control.set_streams, args=([],))
    coordinator.start()
    try:
        assert starting.wait(30)
        with pytest.raises(PipelineError, match="starting or stopping cameras; nothing was changed"):
            control.put("zones", "door", DOOR)
    finally:
        started.set()
        coordinator.join(30)
    assert rows(postgres_dsn) == [] and version(postgres_dsn) == 0
    store.close()


def test_a_zone_naming_a_camera_added_just_before_it_is_applied_by_a_coordinator_that_read_the_cameras_between(
        two, postgres_dsn):
    """A script adds a camera, then a zone naming it, while an instance's heartbeat reads the fleet: a heartbeat that
    read the cameras before the add and the zones after must not take the zone for invalid and keep it out for good."""
    api_cameras, api_zones = FleetCameras(FleetStore(postgres_dsn), {"default"}), two[1]
    api_cameras.store.connect()
    api_cameras.add({"id": "cam-1", "url": "rtsp://cam-1.local/stream"})
    config = ClusterConfig(dsn=postgres_dsn, capacity=10, lease_s=3.0, heartbeat_s=0.5)
    coordinator = Coordinator(config, "a", {"default"}, store=FleetStore(postgres_dsn),
                              renewals=FleetStore(postgres_dsn))
    applied: list[list[str]] = []

    def set_analytics(doc, cameras):
        check(doc, cameras)  # as the pipeline does: a zone naming a camera the fleet lacks is refused
        applied.append([zone["name"] for zone in doc["zones"]])
        return SimpleNamespace(summary=lambda: "applied")

    running = threading.Event()
    coordinator.attach(lambda streams: {}, running, set_analytics)
    coordinator.start()
    members = coordinator.store.members

    def meanwhile(lease_s):  # between this heartbeat's read of the cameras and its read of the zones
        coordinator.store.members = members
        api_cameras.add({"id": "cam-2", "url": "rtsp://cam-2.local/stream"})
        put(api_zones, "zones", "door", {**DOOR, "streams": ["cam-2"]})
        return members(lease_s)

    try:
        coordinator.beat()
        assert applied == [[]]
        coordinator.store.members = meanwhile
        coordinator.beat()
        coordinator.beat()
        assert applied[-1] == ["door"], applied
    finally:
        coordinator.close()
        api_cameras.close()


def test_fleet_import_of_entries_without_a_name_says_which_and_that_they_need_one(tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"zones": [{"polygon": DOOR["polygon"]}, {"polygon": DOOR["polygon"]}]}))
    assert fleet("postgresql://streamweave@127.0.0.1:1/fleet", "import", str(site))[0] == 2  # refused before connecting
    assert capsys.readouterr().err == (f"fleet import: {site}: zones -> 0 -> name: missing; the fleet keeps its zones, "
                                       "lines and alert rules by name\n")
