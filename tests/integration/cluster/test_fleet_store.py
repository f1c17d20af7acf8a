"""The fleet's tables under concurrent use: connecting, which creates or upgrades them, never waits on a
transaction another instance holds open (one frozen in the middle of its heartbeat, up to its idle limit)."""
from __future__ import annotations

import psycopg

from pipeline.cluster.store import FleetStore
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures


def test_an_instance_connects_and_heartbeats_while_another_is_frozen_in_its_heartbeat(postgres_dsn):
    first = FleetStore(postgres_dsn, idle_limit_s=30)
    first.connect()
    first.heartbeat("a", "start-a", 10, 8, 10.0, None, 30, ["default"])
    frozen = psycopg.connect(postgres_dsn)
    later = FleetStore(postgres_dsn, idle_limit_s=30)
    try:
        frozen.execute("UPDATE fleet_instances SET heartbeat_at = now() WHERE name = 'a'")  # not committed
        later.connect()  # an upgrade that locked the table would wait here until its statement timeout, and fail
        later.heartbeat("b", "start-b", 10, 8, 10.0, None, 30, ["default", "fast"])
        assert ("b", 10.0, 8, 10, frozenset({"default", "fast"})) in later.members(30)
    finally:
        frozen.rollback()
        frozen.close()
        later.close()
        first.close()
