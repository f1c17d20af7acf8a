"""The coordinator's decisions against an in-memory fleet and a clock the test moves: claims, the stop
before the leases can expire when renewals fail, a lease lost to another instance, and starts the pipeline
refused. The watchdog and a failing detector are in test_coordinator_faults.py."""
from __future__ import annotations

import threading

import pytest

from pipeline.cluster.coordinator import PRUNE_EVERY_S
from pipeline.cluster.store import FleetUnavailable
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import PartiallyApplied
from tests.support.memory_fleet import HEARTBEAT_S, LEASE_S, coordinator, step


def test_cameras_are_claimed_from_the_second_heartbeat_and_run_through_the_pipeline():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 0.0)
    assert runs == [] and fleet.leases == {}  # the first beat announces the instance only
    step(coord, now, HEARTBEAT_S)
    assert runs == [["cam-1", "cam-2"]] and {i for i, _, _ in fleet.leases.values()} == {"a"}


def test_the_fleet_history_is_pruned_at_the_first_heartbeat_and_then_hourly():
    coord, fleet, now, _ = coordinator(["cam-1"])
    step(coord, now, 2 * PRUNE_EVERY_S + HEARTBEAT_S)
    assert fleet.prunes == [0.0, PRUNE_EVERY_S, 2 * PRUNE_EVERY_S]


def test_when_renewals_fail_every_camera_stops_before_its_lease_can_expire():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)  # the last renewal that arrives is sent at 1.0
    expires = min(e for _, _, e in fleet.leases.values())
    fleet.down = True
    while True:
        wait = coord.tick()
        if runs[-1] == []:
            stopped_at = now[0]
            break
        now[0] += wait
    assert expires == 1.0 + LEASE_S
    assert stopped_at < expires  # nobody else may take the cameras before they stopped here
    assert stopped_at == 1.0 + LEASE_S - HEARTBEAT_S
    assert coord.stats()["lease_losses"] == 2 and coord.stats()["deadline_stops"] == 1


def test_back_after_an_outage_longer_than_a_lease_the_first_heartbeat_only_announces_as_at_a_start():
    """The others' heartbeats went stale in the outage too: claiming at once would take every camera here."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    fleet.down = True
    step(coord, now, 1.0 + 2 * LEASE_S)
    assert runs[-1] == [] and coord.stats()["deadline_stops"] == 1
    fleet.down = False
    fleet.leases.clear()  # expired; the others come back at their own next heartbeat
    step(coord, now, 1.0 + 2 * LEASE_S + HEARTBEAT_S)
    assert runs[-1] == [] and fleet.leases == {}
    step(coord, now, 1.0 + 2 * LEASE_S + 2 * HEARTBEAT_S)
    assert runs[-1] == ["cam-1", "cam-2"]


@pytest.mark.parametrize("then_fails", [True, False])
def test_back_after_a_heartbeat_that_hung_past_a_lease_the_first_heartbeat_only_announces(then_fails):
    """A call on a network gone away hangs until TCP gives up: the outage is counted from the last contact."""
    coord, fleet, now, runs = coordinator([])
    step(coord, now, 1.0)
    heartbeat = fleet.heartbeat

    def hangs(*args):
        fleet.heartbeat = heartbeat
        now[0] += 2 * LEASE_S
        if then_fails:
            raise FleetUnavailable("server closed the connection unexpectedly")
        heartbeat(*args)  # or the database answers at last

    fleet.heartbeat = hangs
    fleet.cameras_.update({c: (1, {"id": c, "url": f"rtsp://h/{c}"}) for c in ("cam-1", "cam-2")})
    step(coord, now, 1.5)  # the heartbeat at 1.5 hangs for two leases
    step(coord, now, now[0])  # the first heartbeat back (the one that hung, when it went through)
    assert runs == [] and fleet.leases == {}
    step(coord, now, now[0] + HEARTBEAT_S)
    assert runs == [["cam-1", "cam-2"]]


def test_after_a_change_longer_than_a_lease_while_the_leases_were_renewed_claims_go_on():
    coord, fleet, now, runs = coordinator(["cam-1"])
    step(coord, now, 1.0)
    fleet.cameras_["cam-2"] = (1, {"id": "cam-2", "url": "rtsp://h/cam-2"})
    set_streams = coord._set_streams

    def slow(streams):  # the change takes two leases; the renewal thread renews meanwhile
        for _ in range(4 * int(LEASE_S / HEARTBEAT_S)):
            now[0] += HEARTBEAT_S / 2
            coord.renew_while_changing()
        set_streams(streams)

    coord._set_streams = slow
    step(coord, now, 1.5)  # claims cam-2, and starting it takes two leases
    coord._set_streams = set_streams
    fleet.cameras_["cam-3"] = (1, {"id": "cam-3", "url": "rtsp://h/cam-3"})
    step(coord, now, now[0])  # the next heartbeat, due since the change began
    assert runs[-1] == ["cam-1", "cam-2", "cam-3"]


def test_one_failed_heartbeat_does_not_delay_claims():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, HEARTBEAT_S / 2)  # announced
    fleet.down = True
    step(coord, now, HEARTBEAT_S * 1.5)
    fleet.down = False
    step(coord, now, HEARTBEAT_S * 2.5)
    assert runs == [["cam-1", "cam-2"]]


def test_a_camera_in_a_lane_only_another_instance_has_is_left_to_it_and_one_no_instance_has_is_reported():
    coord, fleet, now, runs = coordinator(["cam-1"])
    fleet.cameras_["cam-f"] = (1, {"id": "cam-f", "url": "rtsp://h/cam-f", "lane": "fast"})
    fleet.member = ("a", 1.0, 10, 10, frozenset({"default"}))  # the lanes its heartbeat announces
    fleet.others = [("b", 1.0, 10, 10, frozenset({"default", "fast"}))]
    step(coord, now, 1.0)
    assert "cam-f" not in fleet.leases and coord.stats()["invalid_cameras"] == []
    fleet.others = []  # b is gone: no live instance has lane fast
    step(coord, now, 1.0 + HEARTBEAT_S)
    assert "cam-f" not in fleet.leases and coord.stats()["invalid_cameras"] == ["cam-f"]


def test_a_lease_taken_over_elsewhere_is_stopped_here_at_the_next_heartbeat():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    fleet.leases["cam-2"] = ("b", 99, now[0] + LEASE_S)  # it froze past the lease; b took cam-2 over
    step(coord, now, 1.0 + HEARTBEAT_S)
    assert runs[-1] == ["cam-1"] and coord.stats()["lease_losses"] == 1


def test_the_lease_book_forgets_the_cameras_deleted_from_the_fleet():
    """Cameras added and deleted through the API under new ids: the book grew by one entry each for as long as the
    instance ran. Rows of a deleted camera still on their way are vouched for from the database's lease history."""
    coord, fleet, now, runs = coordinator([f"cam-{i}" for i in range(3)])
    step(coord, now, 1.0)
    for i in range(3, 13):  # each replaced by a camera of a new id, one a heartbeat
        fleet.delete(f"cam-{i - 3}")
        fleet.cameras_[f"cam-{i}"] = (1, {"id": f"cam-{i}", "url": f"rtsp://h/cam-{i}"})
        step(coord, now, now[0] + HEARTBEAT_S)
    assert runs[-1] == ["cam-10", "cam-11", "cam-12"]
    assert sorted(coord.book._taken) == ["cam-10", "cam-11", "cam-12"]


def refusing_once(runs: list[list[str]], error: Exception):
    """A set_streams that refuses its first call (as the pipeline does when a stream will not stop or start)."""
    calls = []

    def set_streams(streams):
        calls.append(None)
        if len(calls) == 1:
            raise error
        runs.append([s.id for s in streams])

    return set_streams


def test_cameras_beyond_the_normal_cap_are_claimed_when_no_other_instance_has_room():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2", "cam-3"])
    coord.config = coord.config.model_copy(update={"capacity": 4, "headroom": 0.5})  # normal cap 2
    fleet.member = ("a", 1.0, 2, 4)  # alone: the cameras another instance released by stopping are all free
    step(coord, now, HEARTBEAT_S)
    assert runs == [["cam-1", "cam-2", "cam-3"]] and len(fleet.leases) == 3


def test_a_claim_the_pipeline_refused_to_start_is_started_at_the_next_heartbeat():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    running = threading.Event()
    running.set()
    coord.attach(refusing_once(runs, PartiallyApplied("applied, except: cam-1: stream is still stopping")), running)
    step(coord, now, HEARTBEAT_S)  # claimed, but the pipeline refused to run them
    assert runs == [] and len(fleet.leases) == 2
    step(coord, now, 2 * HEARTBEAT_S)
    assert runs == [["cam-1", "cam-2"]]


def test_an_unforeseen_error_starting_the_cameras_leaves_the_coordinator_running_and_is_tried_again():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    running = threading.Event()
    running.set()
    coord.attach(refusing_once(runs, OSError(24, "Too many open files")), running)  # no decode process could start
    step(coord, now, HEARTBEAT_S)  # the error is logged, the thread's step goes on
    assert runs == [] and len(fleet.leases) == 2 and coord.stats()["heartbeat_failures"] == 1
    step(coord, now, 2 * HEARTBEAT_S)
    assert runs == [["cam-1", "cam-2"]]


def test_a_deadline_stop_the_pipeline_refused_leaves_the_coordinator_running_and_is_tried_again():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    assert runs == [["cam-1", "cam-2"]]
    running = threading.Event()
    running.set()
    coord.attach(refusing_once(runs, PartiallyApplied("applied, except: cam-1: did not stop within 10 s")), running)
    fleet.down = True
    step(coord, now, 1.0 + LEASE_S)  # the deadline passes: the stop is refused, the thread's step goes on
    assert coord.stats()["deadline_stops"] == 1 and runs == [["cam-1", "cam-2"]]
    fleet.down = False
    fleet.cameras_.clear()  # nothing to claim again: the next beat only repeats the refused stop
    step(coord, now, 1.0 + LEASE_S + HEARTBEAT_S)
    assert runs[-1] == []


def test_with_the_default_heartbeat_one_failed_heartbeat_stops_no_camera():
    """The renewal after one missed heartbeat is sent two heartbeats after the last: it must come before the local
    deadline, one heartbeat before the lease ends (with a third of the lease, both fell on the same moment)."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    coord.config = ClusterConfig(dsn="postgresql://h/db", capacity=10, lease_s=LEASE_S)
    step(coord, now, 2 * coord.config.heartbeat)
    assert runs == [["cam-1", "cam-2"]]
    fleet.down = True
    step(coord, now, 3 * coord.config.heartbeat)  # this one fails
    fleet.down = False
    step(coord, now, 2 * LEASE_S)
    assert runs == [["cam-1", "cam-2"]] and coord.stats()["deadline_stops"] == 0

