"""A fleet's zones, lines and alert rules through any instance's API: the database holds them, the instance that
took a change applies it at once, every other one at its next heartbeat, live (cameras keep running, tracks
kept); a bad entry is refused naming its key with nothing written; a reload keeps the database's."""
from __future__ import annotations

import time

import pytest
import yaml

from tests.integration.cluster.conftest import CAMERAS

pytestmark = pytest.mark.slow

LEFT = {"polygon": [[0, 0], [24, 0], [24, 48], [0, 48]]}  # the fake square (8 px, 1 px a frame) is in it a while
CYCLE_S = 6.0  # the square crosses the 64 px picture in 56 frames at 10 fps


def applied_zones(instance) -> list[str]:
    """The zones the instance's pipeline runs now (not what the database holds)."""
    return [zone["name"] for zone in instance.client.get("/api/config").json()["zones"]]


def zone_events(fleet, zone: str, after_ns: int = 0) -> list[tuple[str, str]]:
    return fleet.sql("SELECT DISTINCT stream_id, kind FROM events WHERE rule = %s AND wall_ns > %s ORDER BY 1, 2",
                     (zone, after_ns))


def captured_since(fleet, camera: str, since_ns: int) -> bool:
    return bool(fleet.sql("SELECT 1 FROM detections WHERE stream_id = %s AND wall_ns > %s LIMIT 1",
                          (camera, since_ns)))


def test_a_zone_set_through_one_instance_counts_on_the_others_cameras_and_a_delete_through_that_one_stops_it(fleet):
    a, b = fleet.start("a"), fleet.start("b")
    assert a.poll(lambda: fleet.settled({"a", "b"}), timeout=60), fleet.running()
    camera = sorted(c for c, holder in fleet.holders().items() if holder == "b")[0]

    put = a.client.put("/api/zones/left", json={**LEFT, "streams": [camera], "classes": ["person"]})
    assert put.status_code == 201, put.text
    assert put.json() == {"name": "left", **LEFT, "streams": [camera], "classes": ["person"], "min_score": 0.0,
                          "anchor": "bottom_center"}
    assert fleet.sql("SELECT entry FROM fleet_analytics WHERE section = 'zones'") == [
        ({"name": "left", **LEFT, "streams": [camera], "classes": ["person"]},)]
    assert "left" in applied_zones(a)  # the instance that took the call runs it already
    assert [z["name"] for z in b.client.get("/api/zones").json()] == ["left"]  # the database's, at once
    assert b.poll(lambda: zone_events(fleet, "left") == [(camera, "zone_enter"), (camera, "zone_exit")], timeout=30), \
        zone_events(fleet, "left")
    assert b.running() == {c for c, holder in fleet.holders().items() if holder == "b"}

    assert b.client.delete("/api/zones/left").status_code == 204
    assert applied_zones(b) == [] and fleet.sql("SELECT name FROM fleet_analytics") == []
    assert a.poll(lambda: applied_zones(a) == [], timeout=10)  # at its next heartbeat
    stopped = time.time_ns()
    # frames captured after the delete have been stored, the square crossing the zone's place twice meanwhile
    assert b.poll(lambda: captured_since(fleet, camera, stopped + int(2 * CYCLE_S * 1e9)), timeout=30)
    assert zone_events(fleet, "left", stopped) == []
    assert b.client.delete("/api/zones/left").status_code == 404

    # the camera did not restart on b (its seq would begin again at 0) while the zone came and went
    seqs = [seq for (seq,) in fleet.sql("SELECT seq FROM detections WHERE stream_id = %s AND run_id = %s "
                                       "ORDER BY wall_ns", (camera, fleet.run_ids()["b"]))]
    assert seqs == sorted(seqs) and len(seqs) > 2 * CYCLE_S * 10, seqs[:20]


def test_a_bad_entry_is_refused_naming_its_key_and_a_reload_keeps_the_fleets_zones(fleet):
    a = fleet.start("a", capacity=20, headroom=0.0)
    assert a.poll(lambda: fleet.settled({"a"}), timeout=60)
    assert a.client.put("/api/zones/left", json=LEFT).status_code == 201
    assert a.client.put("/api/alerts/lingering", json={"when": "dwell", "zone": "left", "min_seconds": 2}).status_code == 201
    stored = fleet.sql("SELECT section, name, entry FROM fleet_analytics ORDER BY position")
    version = fleet.sql("SELECT version FROM fleet_analytics_version")

    for path, body, named in [
        ("/api/alerts/lingering", {"when": "dwell", "zone": "hall"}, "alerts -> lingering -> zone: rule 'lingering' "
         "needs a zone; defined zones: ['left']"),
        ("/api/zones/right", {**LEFT, "classes": ["unicorn"]}, "zones -> right -> classes: unknown class ['unicorn']"),
        ("/api/zones/right", {**LEFT, "streams": ["cam-99"]}, "zones -> right -> streams: unknown stream 'cam-99'"),
        ("/api/lines/gate", {"start": [0, 0]}, "lines -> gate -> end: Field required"),
        ("/api/zones/left", {"polygon": [[0, 0], [24, 0]]}, "zones -> left -> polygon"),
    ]:
        refused = a.client.put(path, json=body)
        assert refused.status_code == 400 and named in refused.json()["detail"], refused.text
    assert a.client.delete("/api/zones/left").status_code == 400  # the rule names it
    assert fleet.sql("SELECT section, name, entry FROM fleet_analytics ORDER BY position") == stored
    assert fleet.sql("SELECT version FROM fleet_analytics_version") == version
    assert applied_zones(a) == ["left"]

    assert a.client.post("/api/reload").status_code == 200  # the file has no zones: the fleet's stay
    assert applied_zones(a) == ["left"] and a.running() == set(CAMERAS)
    config = fleet.tmp_path / "a.yaml"
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "zones": [{"name": "mine", **LEFT}]}))
    reload = a.client.post("/api/reload")
    assert reload.status_code == 400 and "zones: must be empty with runtime.cluster" in reload.json()["detail"]
    assert applied_zones(a) == ["left"]
