"""The fleet's cameras changed from two instances' APIs at once (each its own connection to a real PostgreSQL):
an id is added once, and neither of two changes to one camera is lost."""
from __future__ import annotations

import threading

import psycopg
import pytest

from pipeline.cluster.cameras import FleetCameras
from pipeline.cluster.store import FleetStore
from pipeline.errors import StreamExists
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.support.waiting import wait_until

CAMERA = {"id": "cam-1", "url": "rtsp://cam-1.local/stream"}


@pytest.fixture
def two(postgres_dsn):
    instances = [FleetCameras(FleetStore(postgres_dsn), {"default", "priority"}) for _ in range(2)]
    for cameras in instances:
        cameras.store.connect()
    yield instances
    for cameras in instances:
        cameras.close()


def test_one_id_added_from_two_instances_is_added_once_and_the_other_told(two):
    a, b = two
    a.add(CAMERA)
    with pytest.raises(StreamExists, match="'cam-1' already exists in the fleet"):
        b.add({**CAMERA, "url": "rtsp://elsewhere.local/stream"})
    assert b.store.cameras()["cam-1"][1]["url"] == CAMERA["url"]  # the first one's entry, not replaced


def waiting_for_a_lock(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0


def test_changes_to_one_camera_from_two_instances_at_once_are_both_kept(two, postgres_dsn):
    a, b = two
    a.add(CAMERA)
    entered, go = threading.Event(), threading.Event()
    store_change = a.store.change_camera

    def held_open(camera, change):  # a's change holds the camera's row while b's change arrives
        def slow(entry):
            entered.set()
            go.wait(10)
            return change(entry)
        return store_change(camera, slow)

    a.store.change_camera = held_open
    first = threading.Thread(target=a.change, args=("cam-1", {"fps": 5.0}))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=b.change, args=("cam-1", {"lane": "priority"}))
    second.start()
    assert wait_until(lambda: waiting_for_a_lock(postgres_dsn), timeout=10)  # b waits for a's row: both read
    go.set()                                                                  # the entry, one after the other
    first.join(10)
    second.join(10)
    entry = a.store.cameras()["cam-1"][1]
    assert entry["fps"] == 5.0 and entry["lane"] == "priority", entry
