"""Which instance runs which camera: weighted rendezvous hashing under capacities, and the local deadline."""
from __future__ import annotations

from collections import Counter

import pytest
import pipeline.testing  # noqa: F401 - fake:// streams
from pipeline.cluster.assignment import Member, assign, placeable, renew_deadline
from pipeline.config.cluster import ClusterConfig
from pipeline.config.loader import parse_config
from pipeline.errors import ConfigError

CONFIG = "plugins: [pipeline.testing]\nstreams: []\ndetector: {model: fake, engine: fake}\nruntime:\n"

CAMERAS = [f"cam-{i}" for i in range(600)]


def members(*names: str, weight: float = 1.0, cap: int = 10_000) -> list[Member]:
    return [Member(name, weight, cap, cap) for name in names]


def test_a_camera_goes_only_to_an_instance_that_has_its_lane():
    """Configs that differ, as while a new lane is rolled out: b has lane fast, a not yet, c says nothing (any)."""
    fleet = [Member("a", 1.0, 10_000, 10_000, frozenset({"default"})),
             Member("b", 1.0, 10_000, 10_000, frozenset({"default", "fast"})), Member("c", 1.0, 10_000, 10_000)]
    lanes = {camera: "fast" if i % 2 else "default" for i, camera in enumerate(CAMERAS)}
    placed = assign(CAMERAS, fleet, lanes)
    assert len(placed) == len(CAMERAS)
    assert {placed[c] for c in CAMERAS if lanes[c] == "fast"} == {"b", "c"}
    assert {placed[c] for c in CAMERAS if lanes[c] == "default"} == {"a", "b", "c"}
    assert "a" in {assign(CAMERAS, fleet)[c] for c in CAMERAS if lanes[c] == "fast"}  # lanes ignored: a gets some


def test_a_camera_no_live_instance_can_run_is_left_out_and_says_why():
    fleet = [Member("a", 1.0, 10, 10, frozenset({"default"}))]
    cameras = {"ok": (1, {"id": "ok", "url": "rtsp://h/ok"}), "fast": (1, {"id": "fast", "url": "rtsp://h/f", "lane": "fast"}),
               "bad": (1, {"id": "bad"})}
    lanes, problems = placeable(cameras, fleet)
    assert lanes == {"ok": "default"}
    assert problems["fast"] == "no live instance has lane 'fast'" and "not valid" in problems["bad"]


def test_every_camera_goes_to_exactly_one_instance_and_the_shares_are_even():
    placed = assign(CAMERAS, members("a", "b", "c"))
    assert sorted(placed) == sorted(CAMERAS)
    counts = Counter(placed.values())
    assert set(counts) == {"a", "b", "c"} and all(150 < n < 250 for n in counts.values()), counts


def test_a_fourth_instance_takes_only_its_share_and_only_from_the_others():
    before = assign(CAMERAS, members("a", "b", "c"))
    after = assign(CAMERAS, members("a", "b", "c", "d"))
    moved = [camera for camera in CAMERAS if before[camera] != after[camera]]
    assert all(after[camera] == "d" for camera in moved)  # nobody else swaps cameras
    assert 100 < len(moved) < 200  # about a quarter (150), not a reshuffle


def test_an_instance_leaving_hands_on_only_its_own_cameras_spread_over_the_rest():
    before = assign(CAMERAS, members("a", "b", "c", "d"))
    after = assign(CAMERAS, members("a", "b", "d"))
    moved = {camera for camera in CAMERAS if before[camera] != after[camera]}
    assert moved == {camera for camera, name in before.items() if name == "c"}
    assert len(Counter(after[camera] for camera in moved)) == 3


def test_weights_set_the_shares():
    placed = assign(CAMERAS, [Member("big", 3.0, 10_000, 10_000), Member("small", 1.0, 10_000, 10_000)])
    share = Counter(placed.values())["big"] / len(CAMERAS)
    assert 0.68 < share < 0.82, share  # 3 / (3 + 1) = 0.75


def test_caps_fill_normal_capacity_first_then_up_to_capacity_then_leave_cameras_out():
    fleet = [Member("a", 1.0, 3, 5), Member("b", 1.0, 3, 5)]
    assert Counter(assign(CAMERAS[:6], fleet).values()) == {"a": 3, "b": 3}
    assert sorted(Counter(assign(CAMERAS[:8], fleet).values()).values()) in ([4, 4], [3, 5])
    assert len(assign(CAMERAS[:12], fleet)) == 10  # two cameras fit nowhere


def test_the_assignment_does_not_depend_on_the_order_it_is_given():
    fleet = members("a", "b", "c")
    assert assign(CAMERAS, fleet) == assign(list(reversed(CAMERAS)), list(reversed(fleet)))


@pytest.mark.parametrize("capacity, headroom, cap", [(10, 0.2, 8), (6, 0.2, 4), (5, 0.0, 5), (1, 0.9, 1), (7, 0.5, 3)])
def test_normal_cap_is_capacity_less_headroom_rounded_down_but_at_least_one(capacity, headroom, cap):
    assert ClusterConfig(dsn="postgresql://h/db", capacity=capacity, headroom=headroom).normal_cap == cap


@pytest.mark.parametrize("heartbeat_s", [3, 4])
def test_heartbeat_defaults_to_a_quarter_of_the_lease_and_must_stay_below_a_third_of_it(heartbeat_s):
    """A third or more: the renewal after one missed heartbeat would come at or after the local stop."""
    assert ClusterConfig(dsn="postgresql://h/db", capacity=2, lease_s=9).heartbeat == 2.25
    text = CONFIG + f"  cluster: {{dsn: 'postgresql://h/db', capacity: 2, lease_s: 9, heartbeat_s: {heartbeat_s}}}\n"
    with pytest.raises(ConfigError, match=rf"site.yaml:5: runtime -> cluster -> heartbeat_s: {heartbeat_s} s must be "
                       r"below lease_s / 3 \(3 s\): a lease must survive one missed heartbeat \(.*\); "
                       r"lower heartbeat_s or raise lease_s; the default is a quarter of the lease"):
        parse_config(text, "site.yaml")


def test_a_fleet_member_names_no_cameras_in_its_file():
    text = CONFIG.replace("streams: []", "streams: [{id: a, url: 'fake://a'}]") + \
        "  cluster: {dsn: 'postgresql://h/db', capacity: 2}\n"
    with pytest.raises(ConfigError, match="streams: must be empty with runtime.cluster.*fleet import"):
        parse_config(text, "site.yaml")


@pytest.mark.parametrize("section, entry", [
    ("zones", "{name: door, polygon: [[0, 0], [20, 0], [20, 40]]}"),
    ("lines", "{name: gate, start: [0, 0], end: [20, 0]}"),
    ("alerts", "{name: anyone, when: cross, line: gate}"),
])
def test_a_fleet_member_names_no_zones_lines_or_alert_rules_in_its_file(section, entry):
    text = CONFIG + "  cluster: {dsn: 'postgresql://h/db', capacity: 2}\n" + f"{section}:\n  - {entry}\n"
    with pytest.raises(ConfigError, match=rf"site.yaml:\d+: {section}: must be empty with runtime.cluster: the "
                       rf"fleet's {section} live in its database; import them with `run_pipeline.py fleet import"):
        parse_config(text, "site.yaml")


def test_the_local_deadline_comes_one_heartbeat_before_the_lease_can_expire():
    sent, lease_s, heartbeat_s = 100.0, 10.0, 3.0
    deadline = renew_deadline(sent, lease_s, heartbeat_s)
    assert deadline == 107.0
    # the database received the renewal no earlier than it was sent: its expiry is at least sent + lease_s
    assert deadline <= sent + lease_s - heartbeat_s
    # and a renewal one heartbeat later still comes before the deadline, so one slow beat stops nothing
    assert sent + heartbeat_s < deadline
