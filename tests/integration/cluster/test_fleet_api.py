"""A fleet's cameras through any instance's API and the `fleet` command: the database, not a file, holds
them; the instance running a camera follows its changes; /api/cluster and /metrics show the fleet."""
from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
import yaml

from pipeline.cluster.coordinator import Coordinator
from pipeline.config.cluster import ClusterConfig
from tests.conftest import REPO
from tests.integration.cluster.conftest import CAMERAS
from tests.support.postgres import free_port
from tests.support.service import Served, config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

NEW = {"id": "cam-new", "url": "fake://cam-new?fps=10&live=1"}


def stream_fps(instance, camera: str):
    return next((s.get("fps") for s in instance.client.get("/api/config").json()["streams"] if s["id"] == camera),
                "not running")


def test_cameras_added_changed_and_removed_through_the_api_go_to_the_fleet_and_run(fleet):
    a = fleet.start("a", capacity=20, headroom=0.0)
    assert a.poll(lambda: fleet.settled({"a"}), timeout=60)

    added = a.client.post("/api/streams", json=NEW)
    assert added.status_code in (201, 202), added.text
    assert fleet.sql("SELECT entry->>'url' FROM fleet_cameras WHERE id = 'cam-new'") == [(NEW["url"],)]
    assert a.poll(lambda: "cam-new" in a.running(), timeout=10)
    assert a.client.post("/api/streams", json=NEW).status_code == 409
    unknown_lane = a.client.post("/api/streams", json={**NEW, "id": "cam-x", "lane": "fast"})
    assert unknown_lane.status_code == 400 and "lane" in unknown_lane.text and "fast" in unknown_lane.text

    assert a.client.patch("/api/streams/cam-new", json={"fps": 5}).status_code in (200, 202)
    assert a.poll(lambda: stream_fps(a, "cam-new") == 5, timeout=10)  # restarted with the new entry
    put = a.client.put("/api/zones/dock", json={"polygon": [[0, 0], [20, 0], [20, 48]]})
    assert put.status_code == 201, put.text
    assert a.running() == {*CAMERAS, "cam-new"}  # a change of zones keeps the fleet's cameras running

    assert a.client.delete("/api/streams/cam-new").status_code == 204
    assert fleet.sql("SELECT id FROM fleet_cameras WHERE id = 'cam-new'") == []
    assert a.poll(lambda: stream_fps(a, "cam-new") == "not running", timeout=10)
    assert a.client.delete("/api/streams/cam-new").status_code == 404


def test_the_connection_api_cluster_reads_the_fleet_with_is_closed_when_the_service_stops(postgres_dsn, tmp_path):
    """An instance started and stopped in one process (a test, an embedding) would otherwise leave one open
    server session behind each time, until the database refuses connections."""
    coordinator = Coordinator(ClusterConfig(dsn=postgres_dsn, capacity=4), "a", {"default"})  # not started: no session
    served = Served(config(tmp_path, []), cluster=coordinator)
    sessions = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'streamweave'")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert served.client.get("/api/cluster").status_code == 200
        assert conn.execute(sessions).fetchone() == (1,)
        served.stop()
        assert wait_until(lambda: conn.execute(sessions).fetchone() == (0,), timeout=10)


def test_the_fleet_command_lists_holders_and_refuses_a_bad_file_naming_it(fleet, tmp_path):
    a = fleet.start("a")
    assert a.poll(lambda: len(fleet.holders()) == 8, timeout=60)  # alone: past its normal cap (6) to its capacity
    listed = fleet.command("list")
    assert listed.returncode == 0, listed.stderr
    held = [line.split() for line in listed.stdout.splitlines() if line.strip().startswith("cam-")]
    assert len(held) == len(CAMERAS) and sum(row[1] == "a" for row in held) == 8

    cluster = a.cluster()
    assert cluster["this"]["leases_held"] == 8 and [i["cameras"] for i in cluster["instances"]] == [8]
    assert cluster["instances"][0]["lanes"] == ["default"]  # what its heartbeat announces, for the assignment
    metrics = a.client.get("/metrics").text
    assert 'streamweave_cluster_leases_held{instance="a"} 8.0' in metrics
    assert 'streamweave_cluster_takeovers_total{instance="a"} 0.0' in metrics

    bad = tmp_path / "bad.yaml"
    bad.write_text("streams:\n  - {id: cam-1, url: 'rtsp://h/x', fps: -1}\n")
    refused = fleet.command("import", str(bad))
    assert refused.returncode == 2 and f"{bad}:2: streams -> 0 -> fps" in refused.stderr
    assert len(fleet.sql("SELECT id FROM fleet_cameras")) == len(CAMERAS)


def test_a_second_instance_with_a_running_instances_name_is_refused_at_start_and_the_first_goes_on(fleet, tmp_path):
    """Two instances of one name would write one heartbeat row and claim one share between them."""
    a = fleet.start("a", capacity=20, headroom=0.0)
    assert a.poll(lambda: fleet.settled({"a"}), timeout=60)
    twin = yaml.safe_load((tmp_path / "a.yaml").read_text())  # the same name, its own port and outbox
    twin["runtime"]["http"]["port"] = free_port()
    twin["runtime"]["outbox_path"] = str(tmp_path / "twin-outbox.db")
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(twin))
    refused = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "run", str(tmp_path / "twin.yaml"),
                              "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "another running instance of the fleet" in refused.stderr and "is named 'a'" in refused.stderr
    assert "runtime.instance, run --instance" in refused.stderr
    assert fleet.settled({"a"}) and fleet.sql("SELECT count(*) FROM fleet_instances") == [(1,)]
