"""The fleet's tables under concurrent use: connecting, which creates or upgrades them, never waits on a
transaction another instance holds open (one frozen in the middle of a heartbeat, a claim or a zone edit, up to
its idle limit); a claim skips a camera whose lease row another session keeps locked instead of waiting for it;
and their history is kept for `HISTORY_DAYS`, not for ever."""
from __future__ import annotations

import time

import psycopg
import pytest

from pipeline.cluster.store import HISTORY_DAYS, FleetStore, InstanceNameTaken
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

FROZEN_IN = {
    "heartbeat": "UPDATE fleet_instances SET heartbeat_at = now() WHERE name = 'a'",
    "claim": "INSERT INTO fleet_handoffs (camera_id, from_instance, from_token, from_acquired_at, reason, "
             "lease_ended_at) VALUES ('cam', 'a', 1, now(), 'release', now())",
    "zone edit": "UPDATE fleet_analytics_version SET version = version + 1",
}


@pytest.mark.parametrize("frozen_in", FROZEN_IN)
def test_an_instance_connects_and_heartbeats_while_another_is_frozen_in_a_transaction(postgres_dsn, frozen_in):
    first = FleetStore(postgres_dsn, idle_limit_s=30)
    first.connect()
    first.heartbeat("a", "start-a", 10, 8, 10.0, None, 30, ["default"])
    frozen = psycopg.connect(postgres_dsn)
    later = FleetStore(postgres_dsn, idle_limit_s=30)
    try:
        frozen.execute(FROZEN_IN[frozen_in])  # not committed
        later.connect()  # an upgrade that locked the table would wait here until its statement timeout, and fail
        later.heartbeat("b", "start-b", 10, 8, 10.0, None, 30, ["default", "fast"])
        assert ("b", 10.0, 8, 10, frozenset({"default", "fast"})) in later.members(30)
    finally:
        frozen.rollback()
        frozen.close()
        later.close()
        first.close()


def test_handoffs_and_silent_instances_older_than_the_history_are_deleted(postgres_dsn):
    store = FleetStore(postgres_dsn, idle_limit_s=30)
    store.connect()
    try:
        store.put_cameras([{"id": "cam", "url": "fake://cam"}])
        store.heartbeat("a", "start-a", 10, 8, 10.0, None, 30, ["default"])
        store.heartbeat("gone", "start-g", 10, 8, 10.0, None, 30, ["default"])
        [claimed] = store.claim("a", ["cam"], 1, 30, expired=False)
        assert store.release("a", "cam", claimed.token, "release")

        def age(cur):  # the release, and the instance that stopped heart-beating, a day past the history
            cur.execute("INSERT INTO fleet_handoffs (camera_id, from_instance, from_token, from_acquired_at, reason, "
                        "lease_ended_at) SELECT camera_id, from_instance, from_token + 1, from_acquired_at, reason, "
                        "lease_ended_at - make_interval(days => %s) FROM fleet_handoffs", (HISTORY_DAYS + 1,))
            cur.execute("UPDATE fleet_instances SET heartbeat_at = now() - make_interval(days => %s) "
                        "WHERE name = 'gone'", (HISTORY_DAYS + 1,))

        store.tx(age)
        assert store.prune() == 2
        state = store.state()
        assert [(h["from_token"], h["reason"]) for h in state["handoffs"]] == [(claimed.token, "release")]
        assert [i["name"] for i in state["instances"]] == ["a"]
        assert store.prune() == 0
    finally:
        store.close()


def test_a_claim_skips_cameras_whose_lease_rows_are_locked_elsewhere_within_one_wait_and_takes_the_others(
        postgres_dsn):
    """A frozen instance's storage write holds its lease rows (FOR SHARE) for as long as it is frozen."""
    cameras = [f"cam-{i}" for i in range(6)]
    store = FleetStore(postgres_dsn, idle_limit_s=30)
    store.connect()
    store.put_cameras([{"id": camera, "url": f"rtsp://h/{camera}"} for camera in cameras])
    old = {claim.camera for claim in store.claim("b", cameras, 6, 0, expired=False)}  # expired at once
    frozen = psycopg.connect(postgres_dsn)
    try:
        frozen.execute("SELECT * FROM fleet_leases WHERE camera_id <> 'cam-5' FOR SHARE")  # not committed
        started = time.monotonic()
        taken = store.claim("a", cameras, 6, 30, expired=True, lock_wait_s=1.0)
        waited = time.monotonic() - started
        assert old == set(cameras) and [claim.camera for claim in taken] == ["cam-5"]
        assert waited < 3.0  # one wait for all five locked rows (1 s), not one each (5 s): the heartbeat goes on
    finally:
        frozen.rollback()
        frozen.close()
    assert [claim.camera for claim in store.claim("a", ["cam-1"], 1, 30, expired=True)] == ["cam-1"]  # once free
    store.close()


def test_each_instance_is_alive_for_its_own_lease_whatever_lease_the_one_asking_has(postgres_dsn):
    """While a fleet rolls to a longer lease, or one host has a longer one: judged by the asker's lease, an instance
    heart-beating every 15 s (a 60-s lease) was dead to one with a 10-s lease two thirds of the time, so the two
    computed different assignments and handed cameras back and forth."""
    store = FleetStore(postgres_dsn, idle_limit_s=30)
    store.connect()
    try:
        store.heartbeat("short", "start-s", 10, 8, 10.0, None, 10, ["default"])
        store.heartbeat("long", "start-l", 10, 8, 10.0, None, 60, ["default"])
        store.tx(lambda cur: cur.execute("UPDATE fleet_instances SET heartbeat_at = now() - interval '20 s'"))
        assert [m[0] for m in store.members(10)] == [m[0] for m in store.members(60)] == ["long"]
        with pytest.raises(InstanceNameTaken):  # its own lease has not run out: it may still be running
            store.heartbeat("long", "another-start", 10, 8, 10.0, None, 10, ["default"])
        store.heartbeat("short", "a-later-start", 10, 8, 10.0, None, 60, ["default"])  # its own lease has
    finally:
        store.close()


def test_an_instance_started_again_under_its_name_shows_when_this_start_began(postgres_dsn):
    store = FleetStore(postgres_dsn, idle_limit_s=30)
    store.connect()
    try:
        store.heartbeat("a", "first-start", 10, 8, 10.0, None, 10, ["default"])
        store.tx(lambda cur: cur.execute("UPDATE fleet_instances SET started_at = now() - interval '2 days', "
                                         "heartbeat_at = now() - interval '1 day'"))  # crashed a day ago
        started = []
        for _ in range(2):
            store.heartbeat("a", "second-start", 10, 8, 10.0, None, 10, ["default"])
            started.append(store.tx(lambda cur: cur.execute(
                "SELECT started_at, started_at > now() - interval '1 hour' FROM fleet_instances").fetchone()))
        assert started[0][1] and started[1] == started[0]  # this start's, kept by its later heartbeats
    finally:
        store.close()
