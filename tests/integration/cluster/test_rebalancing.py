"""Rebalancing against a real PostgreSQL: instance a (a coordinator whose pipeline only records the cameras it is
given) hands a camera on to the instance it is assigned to only while that one has room to claim it; b is played
by statements on the fleet's tables, as its own coordinator would make them."""
from __future__ import annotations

import threading

import pytest

from pipeline.cluster.coordinator import Coordinator
from pipeline.cluster.store import FleetStore
from pipeline.config.cluster import ClusterConfig
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

LEASE_S = 30.0
# with a and b, each of capacity 1: cam-1 is b's and cam-2 a's; with a alone, cam-1 (the first) is a's


@pytest.fixture
def a_holding_cam_1(postgres_dsn):
    """a, started alone, runs cam-1; then b comes and runs cam-2, up to its capacity of one."""
    config = ClusterConfig(dsn=postgres_dsn, capacity=1, headroom=0, lease_s=LEASE_S)
    coordinator = Coordinator(config, "a", {"default"})
    runs: list[list[str]] = []
    running = threading.Event()
    running.set()
    coordinator.attach(lambda streams: runs.append([s.id for s in streams]), running)
    b = FleetStore(postgres_dsn)
    b.connect()
    b.put_cameras([{"id": camera, "url": f"rtsp://h/{camera}"} for camera in ("cam-1", "cam-2")])
    coordinator.store.connect()
    coordinator.beat()
    coordinator.beat()
    assert runs == [["cam-1"]]
    b.heartbeat("b", "start-b", 1, 1, 1.0, None, LEASE_S, ["default"])
    [taken] = b.claim("b", ["cam-2"], 1, LEASE_S, expired=False)
    yield coordinator, runs, b, taken
    coordinator.store.close()
    coordinator.renewals.close()
    b.close()


def holders(store: FleetStore) -> dict[str, str | None]:
    return {camera["id"]: camera["instance"] for camera in store.state()["cameras"]}


def test_a_camera_is_not_handed_on_to_an_instance_at_its_capacity(a_holding_cam_1):
    """Handed on, it would stay dark until b made room, and for a lease no other camera of the fleet could move."""
    coordinator, runs, b, _ = a_holding_cam_1
    coordinator.beat()  # cam-1 is b's now, but b cannot claim it
    assert runs[-1] == ["cam-1"] and holders(b) == {"cam-1": "a", "cam-2": "b"}
    assert coordinator.stats()["rebalance_moves"] == 0


def test_a_camera_is_handed_on_once_its_instance_has_room(a_holding_cam_1):
    coordinator, runs, b, taken = a_holding_cam_1
    assert b.release("b", "cam-2", taken.token, "release")  # b stopped cam-2: it has room
    coordinator.beat()
    assert runs[-1] == [] and holders(b) == {"cam-1": None, "cam-2": None}
    assert coordinator.stats()["rebalance_moves"] == 1
    assert [claim.camera for claim in b.claim("b", ["cam-1"], 1, LEASE_S, expired=False)] == ["cam-1"]
