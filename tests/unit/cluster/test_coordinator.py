"""The coordinator's decisions against an in-memory fleet and a clock the test moves: claims, the stop
before the leases can expire when renewals fail, and a lease lost to another instance."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.cluster.coordinator import PRUNE_EVERY_S, Coordinator
from pipeline.cluster.store import Claimed, FleetUnavailable
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import PartiallyApplied

LEASE_S, HEARTBEAT_S = 3.0, 0.5


class MemoryFleet:
    """The statements the coordinator uses, on dicts; `down` makes every call fail as an outage would; the
    lease expiries are set at the test clock's time of the call, as the database's now() would be."""

    def __init__(self, clock, cameras: list[str]):
        self.clock, self.down = clock, False
        self.member = ("a", 1.0, 10, 10)  # name, weight, normal cap, capacity
        self.others: list[tuple] = []  # other live instances, with their lanes
        self.cameras_ = {camera: (1, {"id": camera, "url": f"rtsp://h/{camera}"}) for camera in cameras}
        self.leases: dict[str, tuple[str, int, float]] = {}  # camera -> (instance, token, expires)
        self.tokens = 0
        self.prunes: list[float] = []  # when the history was pruned

    def __getattribute__(self, name):
        if name in ("heartbeat", "renew", "cameras", "members", "claim") and object.__getattribute__(self, "down"):
            raise FleetUnavailable("connection refused")
        return object.__getattribute__(self, name)

    def connect(self): ...
    def close(self): ...
    def leave(self, name, process): ...
    def heartbeat(self, name, process, capacity, *args):
        self.announced = capacity

    def release(self, name, camera, token, reason):
        if self.leases.get(camera, ())[:2] == (name, token):
            del self.leases[camera]

    def members(self, lease_s):
        return [self.member, *self.others]

    def cameras(self):
        return dict(self.cameras_)

    def delete(self, camera):
        """As the API's delete: the camera and its lease go."""
        del self.cameras_[camera]
        self.leases.pop(camera, None)

    def renew(self, name, tokens, lease_s):
        now = self.clock()
        renewed = {c: (i, t, e) for c, (i, t, e) in self.leases.items() if i == name and t in tokens and e > now}
        self.leases.update({c: (i, t, now + lease_s) for c, (i, t, _) in renewed.items()})
        return {t for _, t, _ in renewed.values()}

    def claim(self, name, cameras, limit, lease_s, *, expired, lock_wait_s=1.0):
        out = []
        for camera in cameras[:max(0, limit)]:
            lease = self.leases.get(camera)
            if (lease is None) != expired and (lease is None or lease[2] <= self.clock()):
                self.tokens += 1
                self.leases[camera] = (name, self.tokens, self.clock() + lease_s)
                out.append(Claimed(camera, self.tokens, "takeover" if expired else "free"))
        return out

    def move_one(self, *args):
        return False

    def prune(self):
        self.prunes.append(self.clock())
        return 0


def coordinator(cameras: list[str]):
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    fleet = MemoryFleet(clock, cameras)
    config = ClusterConfig(dsn="postgresql://h/db", capacity=10, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
    runs: list[list[str]] = []
    running = threading.Event()
    running.set()
    coord = Coordinator(config, "a", {"default"}, store=fleet, renewals=fleet, clock=clock)
    coord.attach(lambda streams: runs.append([s.id for s in streams]), running)
    return coord, fleet, now, runs


def step(coord, now, until: float) -> None:
    """Tick the coordinator as its thread would, moving the clock to each moment it asks to wake at, up to
    and including `until`."""
    wait = coord.tick()
    while now[0] + wait <= until:
        now[0] += wait
        wait = coord.tick()


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
    coord._changing = True  # as while `_apply` runs
    now[0] += HEARTBEAT_S
    coord.renew_while_changing()
    assert len(calls) == 1 and sorted(calls[0][1]) == sorted(held.token for held in coord.held.values())
