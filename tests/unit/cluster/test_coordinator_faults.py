"""The coordinator when things hang or fail, against an in-memory fleet and a clock the test moves: the watchdog
that stops the cameras at the deadline whatever the heartbeat thread waits on, a detector that fails every batch,
gives up the pipeline refuses, and cameras deleted or moved while the pipeline changes."""
from __future__ import annotations

import threading
import time

from pipeline.cluster.coordinator import Coordinator
from pipeline.cluster.store import FleetUnavailable
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import PartiallyApplied
from tests.support.memory_fleet import HEARTBEAT_S, LEASE_S, MemoryFleet, coordinator, step


def test_the_watchdog_stops_the_cameras_at_the_deadline_while_a_heartbeat_waits_on_the_database():
    """A renewal that hangs (a network gone away: TCP gives up long after the lease) holds the heartbeat thread;
    the watchdog, on its own thread, still stops every camera at the deadline, before the leases can expire."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    assert runs[-1] == ["cam-1", "cam-2"]
    deadline = coord._deadline
    hanging, release = threading.Event(), threading.Event()

    def hang(*args):
        hanging.set()
        release.wait(30)
        raise FleetUnavailable("server closed the connection unexpectedly")

    fleet.renew = hang
    now[0] = deadline - 0.01
    heartbeat = threading.Thread(target=coord.tick)
    heartbeat.start()
    assert hanging.wait(10)  # the heartbeat thread now waits inside the renewal
    assert coord.check_deadline() > 0 and runs[-1] == ["cam-1", "cam-2"]  # not yet
    now[0] = deadline
    coord.check_deadline()  # what the watchdog thread does when it wakes at the deadline
    assert runs[-1] == [] and coord.counters.deadline_stops == 1
    assert all(expires > deadline for _, _, expires in fleet.leases.values())  # stopped before any lease expired
    release.set()
    heartbeat.join(10)
    assert not heartbeat.is_alive() and coord.counters.heartbeat_failures == 1 and coord.held == {}


def test_while_starting_cameras_takes_longer_than_a_lease_the_watchdog_renews_and_nothing_stops():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    assert runs[-1] == ["cam-1", "cam-2"]
    fleet.cameras_["cam-3"] = (1, {"id": "cam-3", "url": "rtsp://h/cam-3"})
    starting, started = threading.Event(), threading.Event()

    def slow_start(streams):  # a decode process spawned, decoders opened: longer than the lease
        starting.set()
        started.wait(30)
        runs.append([s.id for s in streams])

    coord._set_streams = slow_start
    now[0] = coord._next_beat
    heartbeat = threading.Thread(target=coord.tick)
    heartbeat.start()
    assert starting.wait(10)  # the heartbeat thread claimed cam-3 and is now starting it
    first_deadline = coord._deadline
    for _ in range(4 * int(LEASE_S / HEARTBEAT_S)):  # the watchdog's rounds over two leases' time
        now[0] += HEARTBEAT_S / 2
        coord.renew_while_changing()
        coord.check_deadline()
    assert coord._deadline > first_deadline and coord.counters.deadline_stops == 0
    assert all(instance == "a" and expires > now[0] for instance, _, expires in fleet.leases.values())
    started.set()
    heartbeat.join(10)
    assert not heartbeat.is_alive() and runs[-1] == ["cam-1", "cam-2", "cam-3"] and len(coord.held) == 3


def test_a_renewal_that_hangs_during_a_change_does_not_keep_the_watchdog_from_the_deadline():
    """The network goes away while cameras start: the renewal made for the change hangs (TCP gives up only much
    later), and so does the heartbeat's after the change; the watchdog, on its own thread, still stops every
    camera before the leases can expire. Real threads and the real clock, a short lease."""
    lease_s, heartbeat_s = 1.2, 0.3
    fleet = MemoryFleet(time.monotonic, ["cam-1", "cam-2"])
    config = ClusterConfig(dsn="postgresql://h/db", capacity=10, lease_s=lease_s, heartbeat_s=heartbeat_s)
    coord = Coordinator(config, "a", {"default"}, store=fleet, renewals=fleet)
    runs: list[list[str]] = []
    running, changed, renewal_hangs, release = (threading.Event() for _ in range(4))

    def set_streams(streams):
        runs.append([s.id for s in streams])
        if len(runs) == 2:  # the change that starts cam-3 lasts until a renewal hangs
            renewal_hangs.wait(10)
        changed.set()

    renew = fleet.renew

    def hanging_renew(*args):
        if len(runs) < 2:
            return renew(*args)
        renewal_hangs.set()
        release.wait(30)
        raise FleetUnavailable("server closed the connection unexpectedly")

    fleet.renew = hanging_renew
    coord.attach(set_streams, running)
    running.set()
    coord.start()
    try:
        assert changed.wait(10) and runs == [["cam-1", "cam-2"]]
        changed.clear()
        fleet.cameras_["cam-3"] = (1, {"id": "cam-3", "url": "rtsp://h/cam-3"})
        assert changed.wait(10) and runs[-1] == ["cam-1", "cam-2", "cam-3"]
        changed.clear()
        assert changed.wait(3 * lease_s), "the cameras were not stopped"
        stopped = time.monotonic()
        assert runs[-1] == [] and coord.counters.deadline_stops == 1
        assert all(expires > stopped for _, _, expires in fleet.leases.values())  # before any lease expired
    finally:
        release.set()
        coord.close()


def test_the_watchdog_renews_nothing_while_the_pipeline_is_not_being_changed():
    coord, fleet, now, runs = coordinator(["cam-1"])
    step(coord, now, 1.0)
    calls = []
    fleet.renew = lambda *args: calls.append(args) or set()
    now[0] += 2 * HEARTBEAT_S
    coord.renew_while_changing()
    assert calls == [] and coord.counters.deadline_stops == 0


def failing_detector(coord, runs):
    """Attach a detector the test switches: each look finds more batches failed while `state["failing"]`, more
    through while not, none either way while `state["batches"]` is False (cameras reconnecting, or none)."""
    state = {"failed": 0, "through": 0, "failing": False, "batches": True}

    def detector():
        key = "failed" if state["failing"] else "through"
        state[key] += state["batches"] and bool(coord.held)  # no camera here, no batch
        return state["failed"], state["through"]

    running = threading.Event()
    running.set()
    coord.attach(lambda streams: runs.append([s.id for s in streams]), running, detector=detector)
    state["detector"] = detector
    return state


def test_a_detector_that_fails_every_batch_for_a_lease_hands_every_camera_on_and_takes_none_while_it_cools_down():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    state = failing_detector(coord, runs)
    step(coord, now, 1.0)
    assert runs[-1] == ["cam-1", "cam-2"]
    state["failing"] = True
    seen = 1.5  # the first heartbeat that sees it fail
    step(coord, now, seen + LEASE_S - 0.01)
    assert runs[-1] == ["cam-1", "cam-2"] and coord.stats()["detector_giveups"] == 0
    gave_up = seen + LEASE_S
    step(coord, now, gave_up)
    assert runs[-1] == [] and fleet.leases == {} and fleet.announced == 0  # stopped here, leases ended, no room
    assert coord.stats()["detector_giveups"] == 1
    step(coord, now, gave_up + LEASE_S - 0.01)  # the first cool-down lasts a lease: nothing claimed
    assert runs[-1] == [] and fleet.leases == {}
    step(coord, now, gave_up + LEASE_S)
    assert runs[-1] == ["cam-1", "cam-2"]  # claimed again after it
    seen = gave_up + LEASE_S + HEARTBEAT_S
    step(coord, now, seen + LEASE_S)  # still failing: a lease of failures again, then handed on
    assert runs[-1] == [] and coord.stats()["detector_giveups"] == 2
    gave_up = seen + LEASE_S
    state["failing"] = False  # it works again (the cool-down, now two leases, still runs out)
    step(coord, now, gave_up + 2 * LEASE_S - 0.01)
    assert runs[-1] == [] and fleet.announced == 0
    step(coord, now, gave_up + 2 * LEASE_S + HEARTBEAT_S)
    assert runs[-1] == ["cam-1", "cam-2"] and fleet.announced == 10 and coord.stats()["detector_giveups"] == 2


def test_failures_long_ago_do_not_count_toward_a_lease_of_failures():
    """The detector failed once, then no batch ran for three leases (its cameras reconnecting): one more failure
    starts a new count, it does not hand the cameras on at once."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    state = failing_detector(coord, runs)
    step(coord, now, 1.0)
    state["failing"] = True
    step(coord, now, 1.5)
    state["batches"] = False
    step(coord, now, 1.5 + 3 * LEASE_S)
    state["batches"] = True
    step(coord, now, 2.0 + 3 * LEASE_S)
    assert runs[-1] == ["cam-1", "cam-2"] and coord.stats()["detector_giveups"] == 0


def test_a_give_up_the_pipeline_refuses_keeps_the_cameras_held_and_renewed_and_is_tried_again():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    state = failing_detector(coord, runs)
    refused = []

    def set_streams(streams):
        if not streams and not refused:
            refused.append(now[0])
            raise PartiallyApplied("applied, except: cam-1: did not stop within 10 s")
        runs.append([s.id for s in streams])

    coord._set_streams = set_streams
    step(coord, now, 1.0)
    state["failing"] = True
    step(coord, now, 1.5 + LEASE_S)  # the stop is refused: the cameras stay held, their leases renewed
    assert refused == [1.5 + LEASE_S] and coord.stats()["detector_giveups"] == 0 and len(coord.held) == 2
    assert all(expires == 1.5 + 2 * LEASE_S for _, _, expires in fleet.leases.values())
    step(coord, now, 1.5 + LEASE_S + HEARTBEAT_S)  # still failing: the next heartbeat tries again, and it stops
    assert runs[-1] == [] and fleet.leases == {} and coord.stats()["detector_giveups"] == 1


def test_a_camera_this_instance_cannot_run_is_let_go_and_reported_and_the_others_run_on():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    fleet.cameras_["cam-x"] = (1, {"id": "cam-x", "url": "/nonexistent/clip.mp4"})

    def set_streams(streams):  # as Control.set_streams: what cannot run here is left out and named
        runs.append([s.id for s in streams if s.id != "cam-x"])
        return {"cam-x": "streams -> 0 -> url: no such file"} if any(s.id == "cam-x" for s in streams) else {}

    coord._set_streams = set_streams
    step(coord, now, 1.0)
    assert runs[-1] == ["cam-1", "cam-2"] and sorted(coord.held) == ["cam-1", "cam-2"]
    assert "cam-x" not in fleet.leases and coord.stats()["invalid_cameras"] == ["cam-x"]  # its lease ended
    fleet.delete("cam-1")  # later changes still apply: not held back by the camera left out
    step(coord, now, 2.0)
    assert runs[-1] == ["cam-2"] and "cam-x" not in fleet.leases  # and it was not claimed again meanwhile
    fleet.cameras_["cam-x"] = (2, {"id": "cam-x", "url": "rtsp://h/cam-x"})  # fixed: a new revision is tried
    coord._set_streams = lambda streams: runs.append([s.id for s in streams])
    step(coord, now, 3.0)
    assert runs[-1] == ["cam-2", "cam-x"] and coord.stats()["invalid_cameras"] == []


def test_a_camera_deleted_while_cameras_start_for_longer_than_a_lease_does_not_stop_the_others():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    step(coord, now, 1.0)
    fleet.cameras_["cam-3"] = (1, {"id": "cam-3", "url": "rtsp://h/cam-3"})
    set_streams = coord._set_streams

    def slow(streams):  # starting cam-3 takes two leases; cam-1 is deleted meanwhile
        fleet.delete("cam-1")
        for _ in range(4 * int(LEASE_S / HEARTBEAT_S)):
            now[0] += HEARTBEAT_S / 2
            coord.renew_while_changing()
            coord.check_deadline()
        set_streams(streams)

    coord._set_streams = slow
    step(coord, now, 1.5)
    assert coord.counters.deadline_stops == 0 and fleet.leases["cam-2"][2] > now[0]
    coord._set_streams = set_streams
    step(coord, now, now[0])  # the next heartbeat stops the deleted camera alone
    assert runs[-1] == ["cam-2", "cam-3"]


def test_a_camera_whose_entry_moves_to_a_lane_this_instance_lacks_is_stopped_and_its_lease_ended():
    coord, fleet, now, runs = coordinator([f"cam-{i}" for i in range(8)])
    fleet.member = ("a", 1.0, 10, 10, frozenset({"default"}))
    fleet.others = [("b", 1.0, 10, 10, frozenset({"default", "night"}))]
    step(coord, now, 1.0)
    mine = sorted(coord.held)
    assert mine and runs[-1] == mine
    moved = mine[0]
    fleet.cameras_[moved] = (2, {"id": moved, "url": f"rtsp://h/{moved}", "lane": "night"})
    step(coord, now, 1.0 + HEARTBEAT_S)
    assert moved not in runs[-1] and moved not in fleet.leases  # b, which has the lane, can take it


def test_a_renewal_while_the_pipeline_changes_renews_every_lease_in_one_call():
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2", "cam-3"])
    step(coord, now, 1.0)
    calls, renew = [], fleet.renew
    fleet.renew = lambda *args: (calls.append(args), renew(*args))[1]
    coord._changing = 1  # as while `_apply` runs
    now[0] += HEARTBEAT_S
    coord.renew_while_changing()
    assert len(calls) == 1 and sorted(calls[0][1]) == sorted(held.token for held in coord.held.values())


def zones_applied_slowly(coord, fleet, now) -> tuple[threading.Thread, threading.Event]:
    """The heartbeat thread, applying a zone changed through another instance's API, waits for the pipeline until
    the event is set."""
    applying, applied = threading.Event(), threading.Event()

    def slow_zones(doc, cameras):
        applying.set()
        applied.wait(30)
        return type("Change", (), {"summary": lambda self: "zones"})()

    coord.attach(coord._set_streams, coord._running, slow_zones)
    coord._analytics_version = 0
    step(coord, now, 1.0)
    fleet.analytics_version = 1
    now[0] = coord._next_beat
    heartbeat = threading.Thread(target=coord.tick)
    heartbeat.start()
    assert applying.wait(10)
    return heartbeat, applied


def two_leases_of_watching(coord, now) -> int:
    """The watchdog's and the renewal thread's rounds over two leases; the deadline stops they made."""
    for _ in range(4 * int(LEASE_S / HEARTBEAT_S)):
        now[0] += HEARTBEAT_S / 2
        coord.renew_while_changing()
        coord.check_deadline()
    return coord.counters.deadline_stops


def test_while_applying_the_fleets_zones_takes_longer_than_a_lease_the_leases_are_renewed_and_nothing_stops():
    """Applying the zones waits for the pipeline (a reload or a camera pause holds it): the heartbeat thread waits
    there as it does starting cameras, and the leases are renewed meanwhile as they are then."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    heartbeat, applied = zones_applied_slowly(coord, fleet, now)
    assert runs[-1] == ["cam-1", "cam-2"]
    stops = two_leases_of_watching(coord, now)
    applied.set()
    heartbeat.join(10)
    assert not heartbeat.is_alive() and stops == 0 and runs[-1] == ["cam-1", "cam-2"] and len(coord.held) == 2


def test_a_change_of_the_cameras_ending_while_the_zones_are_applied_leaves_the_leases_renewed():
    """The two changes may overlap (the cameras' on another thread): the first to end must not end the renewals
    that the other, still waiting for the pipeline, needs."""
    coord, fleet, now, runs = coordinator(["cam-1", "cam-2"])
    heartbeat, applied = zones_applied_slowly(coord, fleet, now)
    coord._apply()  # begins and ends while the zones are still being applied
    stops = two_leases_of_watching(coord, now)
    applied.set()
    heartbeat.join(10)
    assert not heartbeat.is_alive() and stops == 0 and runs[-1] == ["cam-1", "cam-2"] and coord._changing == 0
