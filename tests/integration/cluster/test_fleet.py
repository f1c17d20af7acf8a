"""Three (then four) `run` processes share twelve cameras through PostgreSQL: each camera runs on exactly
one; a killed instance's cameras run again on the others within the lease time and a few seconds; a
paused one stores nothing it captured after it lost its cameras; a joining one takes only its share."""
from __future__ import annotations

import json
import signal
import time
from collections import defaultdict

import pytest

from pipeline.cluster.assignment import Member, assign
from pipeline.testing.engine import FAILS_WHILE
from tests.integration.cluster.conftest import CAMERAS, MARK_EVERY
from tests.support.fleet import HEARTBEAT_S, LEASE_S

pytestmark = [pytest.mark.slow, pytest.mark.fault]

FEW_S = 5.0  # beyond lease_s + heartbeat: a claim, the camera's start and its first frame on a 2-core machine


def frames(fleet) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(run, camera) -> its stored frames as (wall_ns, seq), in capture order."""
    out = defaultdict(list)
    for run, camera, wall, seq in fleet.sql("SELECT DISTINCT run_id, stream_id, wall_ns, seq FROM detections "
                                            "ORDER BY wall_ns"):
        out[run, camera].append((wall, seq))
    return out


def events(fleet) -> dict[tuple[str, str], list[int]]:
    """(run, camera) -> the capture times of its stored events."""
    out = defaultdict(list)
    for run, camera, wall in fleet.sql("SELECT run_id, stream_id, wall_ns FROM events ORDER BY wall_ns"):
        out[run, camera].append(wall)
    return out


def marks_expected(stored: list[tuple[int, int]]) -> int:
    """MarkEveryNth marks every fifth frame of each start of a camera (seq starts again at 0 each time)."""
    starts = [i for i, (_, seq) in enumerate(stored) if i == 0 or seq <= stored[i - 1][1]]
    return sum((end - start) // MARK_EVERY for start, end in zip(starts, [*starts[1:], len(stored)]))


def assert_no_camera_ran_on_two_instances_at_once(fleet) -> None:
    """Ordered by capture time, a camera's rows change run only where a lease changed hands."""
    rows = defaultdict(list)
    for camera, run in fleet.sql("SELECT stream_id, run_id FROM detections ORDER BY wall_ns"):
        rows[camera].append(run)
    handoffs = dict(fleet.sql("SELECT camera_id, count(*) FROM fleet_handoffs WHERE to_instance IS NOT NULL "
                              "GROUP BY camera_id"))
    for camera, runs in rows.items():
        switches = sum(a != b for a, b in zip(runs, runs[1:]))
        assert switches <= handoffs.get(camera, 0), f"{camera}: {switches} changes of instance, {handoffs} handoffs"


def test_a_killed_instances_cameras_run_again_on_the_others_and_every_event_is_stored_once(fleet):
    for name in "abc":
        fleet.start(name)
    a, b, c = fleet.instances.values()
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}), timeout=60), (fleet.running(), fleet.holders())
    runs = fleet.run_ids()
    lost = sorted(camera for camera, holder in fleet.holders().items() if holder == "b")
    assert lost

    b.proc.kill()  # SIGKILL: no release, its leases must expire
    killed = time.monotonic()
    assert a.poll(lambda: fleet.settled({"a", "c"}), timeout=LEASE_S + HEARTBEAT_S + FEW_S), fleet.running()
    print(f"failover of {len(lost)} cameras: {time.monotonic() - killed:.2f} s (lease {LEASE_S:g} s, "
          f"heartbeat {HEARTBEAT_S:g} s)")
    handoffs = [h for h in a.cluster()["handoffs"] if h["from_instance"] == "b" and h["reason"] == "takeover"]
    assert sorted(h["camera"] for h in handoffs) == lost  # each with its gap: lease end to the start elsewhere
    assert all(h["to_instance"] in ("a", "c") and 0 < h["gap_s"] < LEASE_S for h in handoffs), handoffs
    print("takeover gaps (lease end to start elsewhere):", {h["camera"]: round(h["gap_s"], 2) for h in handoffs})
    moved_marks = lambda: all(events(fleet).get((runs[h["to_instance"]], h["camera"])) for h in handoffs)  # noqa: E731
    assert a.poll(moved_marks, timeout=30)
    fleet.close()  # a and c stop cleanly: their outboxes are delivered

    stored, marked = frames(fleet), events(fleet)
    assert len({(camera, wall) for (_, camera), walls in marked.items() for wall in walls}) == \
        sum(len(walls) for walls in marked.values())  # no frame's event twice, from one instance or two
    assert set(marked) - set(stored) <= {(runs["b"], camera) for camera in CAMERAS}
    for name in "ac":  # stopped cleanly: each event is of a stored frame, every stored frame's event is there
        # (the killed one's outbox may have delivered an event whose frame's rows were still queued)
        for camera in CAMERAS:
            walls, frames_of = marked.get((runs[name], camera), []), stored.get((runs[name], camera), [])
            assert set(walls) <= {wall for wall, _ in frames_of}, (name, camera)
            assert len(walls) == marks_expected(frames_of), (name, camera)
    assert_no_camera_ran_on_two_instances_at_once(fleet)


def test_an_instance_whose_detector_fails_hands_its_cameras_on_and_takes_a_share_back_once_it_works(fleet, tmp_path):
    broken = tmp_path / "c-detector-broken"
    for name in "ab":
        fleet.start(name)
    c = fleet.start("c", env={FAILS_WHILE: str(broken)})
    a = fleet.instances["a"]
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}), timeout=60), (fleet.running(), fleet.holders())
    assert c.status("/readyz") == 200

    broken.touch()  # every batch fails from now on (a GPU that fell off the bus)
    assert a.poll(lambda: fleet.settled({"a", "b"}), timeout=LEASE_S + 2 * HEARTBEAT_S + FEW_S), fleet.running()
    assert c.status("/readyz") == 503 and c.cluster()["this"]["detector_giveups"] == 1
    from_c = [h for h in a.cluster()["handoffs"] if h["from_instance"] == "c"]
    assert from_c and {h["reason"] for h in from_c} == {"release"}  # ended when it stopped them, none expired

    broken.unlink()  # it works again: after its cool-down it takes its share back, one camera at a time
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}) and "c" in fleet.holders().values(), timeout=60)
    assert c.poll(lambda: c.status("/readyz") == 200)
    assert_no_camera_ran_on_two_instances_at_once(fleet)


def test_an_instance_paused_past_its_lease_stores_nothing_for_the_cameras_it_lost(fleet):
    for name in "abc":
        fleet.start(name)
    a, b, c = fleet.instances.values()
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}), timeout=60)
    runs = fleet.run_ids()
    lost = sorted(camera for camera, holder in fleet.holders().items() if holder == "c")

    c.proc.send_signal(signal.SIGSTOP)
    fleet.paused.add("c")
    try:
        assert a.poll(lambda: fleet.settled({"a", "b"}), timeout=LEASE_S + HEARTBEAT_S + FEW_S), \
            (fleet.running(), fleet.holders())
    finally:
        c.proc.send_signal(signal.SIGCONT)
        fleet.paused.discard("c")
    assert c.poll(lambda: c.cluster()["this"]["deadline_stops"] + c.cluster()["this"]["lease_losses"] > 0, timeout=30)
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}), timeout=60)  # it rejoins and gets its share back
    fenced = c.cluster()["this"]["fenced_rows"]
    fleet.close()

    ended = {camera: ended for camera, ended in fleet.sql(
        "SELECT camera_id, extract(epoch FROM lease_ended_at)::float8 * 1e9 FROM fleet_handoffs "
        "WHERE from_instance = 'c' AND reason = 'takeover'")}
    assert sorted(ended) == lost
    again = defaultdict(lambda: float("inf"))  # when c had a camera again (a new lease, later)
    for camera, started in fleet.sql("SELECT camera_id, min(extract(epoch FROM started_at)::float8 * 1e9) "
                                     "FROM fleet_handoffs WHERE to_instance = 'c' GROUP BY camera_id"):
        again[camera] = started
    for table in ("detections", "events"):
        late = [(camera, wall) for camera, wall in fleet.sql(f"SELECT stream_id, wall_ns FROM {table} WHERE run_id = %s",
                                                             (runs["c"],))
                if camera in ended and ended[camera] <= wall < again[camera]]
        assert late == [], f"{table}: rows of cameras c had lost, captured after its lease ended (fenced {fenced})"
    assert_no_camera_ran_on_two_instances_at_once(fleet)
    print(f"rows refused by fencing after SIGCONT: {fenced}")


def members(*names: str) -> list[Member]:
    return [Member(name, 8.0, 6, 8) for name in names]  # as Fleet.start: capacity 8, headroom 0.25


def test_a_fourth_instance_joining_takes_only_its_share_one_camera_at_a_time(fleet):
    for name in "abc":
        fleet.start(name)
    a = fleet.instances["a"]
    three = assign(CAMERAS, members("a", "b", "c"))
    assert a.poll(lambda: fleet.settled({"a", "b", "c"}) and fleet.holders() == three, timeout=60)
    before = {row[0] for row in fleet.sql("SELECT id FROM fleet_handoffs")}

    fleet.start("d")
    four = assign(CAMERAS, members("a", "b", "c", "d"))
    assert a.poll(lambda: fleet.settled({"a", "b", "c", "d"}) and fleet.holders() == four, timeout=60)
    share = sorted(camera for camera, name in four.items() if name == "d")
    assert share and sorted(camera for camera in CAMERAS if three[camera] != four[camera]) == share
    moves = [row for row in fleet.sql("SELECT id, camera_id, reason, to_instance, gap_s, lease_ended_at, started_at "
                                      "FROM fleet_handoffs ORDER BY id") if row[0] not in before]
    assert sorted(move[1] for move in moves) == share  # each camera moved once, nothing else moved
    assert all(reason == "rebalance" and to == "d" and gap >= 0 for _, _, reason, to, gap, _, _ in moves)
    for earlier, later in zip(moves, moves[1:]):  # one at a time: the next left only after the last arrived
        assert later[5] >= earlier[6], json.dumps([str(m) for m in moves])
