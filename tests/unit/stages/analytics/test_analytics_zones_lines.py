import pytest

from pipeline.config.models import LineConfig, ZoneConfig
from pipeline.errors import ConfigError
from pipeline.stages.analytics.stage import AnalyticsStage
from tests.support.tracks import CLASS_NAMES, moment, run

SQUARE = [(100, 100), (300, 100), (300, 300), (100, 300)]
DOOR = LineConfig(name="door", start=(200, 0), end=(200, 400))  # pointing down: its right side is x < 200


def stage(zones=(), lines=()):
    return AnalyticsStage("cam-1", list(zones), list(lines), [], CLASS_NAMES)


def test_track_walking_through_a_zone_enters_once_and_exits_with_its_dwell_time():
    s = stage(zones=[ZoneConfig(name="square", polygon=SQUARE)])
    walk = [[(1, x, 200)] for x in range(10, 410, 20)]  # 20 px per frame, 10 fps
    events = run(s, walk)
    kinds = [(e.kind, e.track_id) for e in events]
    assert kinds == [("zone_enter", 1), ("zone_exit", 1)]
    enter, exit_ = events
    assert enter.ts_ns == 5 * 100_000_000  # first frame with x > 100: x = 110
    assert exit_.ts_ns == 15 * 100_000_000  # first frame with x > 300: x = 310
    assert exit_.payload["dwell_s"] == pytest.approx(1.0) and exit_.payload["reason"] == "left"
    assert s.stats()["zones"]["square"] == {"occupancy": 0, "entered": 1}


def test_occupancy_counts_tracks_inside_and_stream_end_closes_visits():
    s = stage(zones=[ZoneConfig(name="square", polygon=SQUARE)])
    run(s, [[(1, 150, 200), (2, 250, 250), (3, 50, 50)]])
    assert s.zones["square"].occupancy == 2
    closing = s.end(moment(5))
    assert sorted(e.track_id for e in closing) == [1, 2]
    assert {e.payload["reason"] for e in closing} == {"end_of_stream"}
    assert s.zones["square"].occupancy == 0


def test_zone_visit_ends_as_lost_when_the_track_disappears():
    s = stage(zones=[ZoneConfig(name="square", polygon=SQUARE)])
    waiting = run(s, [[(1, 150, 200)]] * 3 + [[]] * 20)
    assert [e.kind for e in waiting] == ["zone_enter"]  # unseen for 2 s: not yet lost
    events = run(stage(zones=[ZoneConfig(name="square", polygon=SQUARE)]), [[(1, 150, 200)]] * 3 + [[]] * 25)
    assert [(e.kind, e.payload.get("reason")) for e in events] == [("zone_enter", None), ("zone_exit", "lost")]
    assert events[1].ts_ns == 2 * 100_000_000  # the visit ended when the track was last seen ...
    assert events[1].payload["dwell_s"] == 0.2  # ... so the dwell does not include the 2 s of waiting


def test_jitter_on_a_zone_edge_does_not_enter_and_leave_again():
    s = stage(zones=[ZoneConfig(name="square", polygon=SQUARE)])
    walk = [[(1, x, 200)] for x in (60, 80, 99, 101, 98, 103, 97, 102, 130, 160, 200)]  # 60 px tall: band 6 px
    events = run(s, walk)
    assert [e.kind for e in events] == ["zone_enter"]
    assert events[0].ts_ns == 8 * 100_000_000  # decided only at x = 130, clear of the edge


def test_zone_class_and_score_filters():
    zone = ZoneConfig(name="square", polygon=SQUARE, classes=["car"], min_score=0.5)
    s = stage(zones=[zone])
    events = run(s, [[(1, 150, 200, 0), (2, 160, 200, 2, 0.4), (3, 170, 200, 2, 0.8)]])
    assert [e.track_id for e in events] == [3]


def test_a_zone_naming_a_class_that_two_ids_share_takes_the_boxes_of_both():
    zone = ZoneConfig(name="square", polygon=SQUARE, classes=["car"])
    s = AnalyticsStage("cam-1", [zone], [], [], ["car", "person", "car"])
    events = run(s, [[(1, 150, 200, 0), (2, 160, 200, 1), (3, 170, 200, 2)]])
    assert sorted(e.track_id for e in events) == [1, 3]


def test_unknown_class_name_is_a_config_error_naming_the_zone():
    with pytest.raises(ConfigError, match="zone 'square'.*truck"):
        stage(zones=[ZoneConfig(name="square", polygon=SQUARE, classes=["truck"])])


def test_line_counts_both_directions_once_each():
    s = stage(lines=[DOOR])
    there = [[(1, x, 200)] for x in range(260, 140, -20)]  # right to left: onto the line's right side
    back = [[(1, x, 200)] for x in range(140, 280, 20)]
    events = run(s, there + back)
    assert [(e.kind, e.payload["direction"]) for e in events] == [("line_cross", "in"), ("line_cross", "out")]
    assert s.stats()["lines"]["door"] == {"in": 1, "out": 1}


def test_jitter_on_the_line_is_not_counted_again():
    s = stage(lines=[DOOR])
    approach = [[(1, x, 200)] for x in (260, 240, 220)]
    jitter = [[(1, 200 + dx, 200)] for dx in (-3, 4, -5, 2, -4, 5, -2) * 3]  # band = 0.1 * 60 px
    leave = [[(1, x, 200)] for x in (180, 160)]
    events = run(s, approach + jitter + leave)
    assert [e.payload["direction"] for e in events] == ["in"]


def test_crossing_beside_the_segment_is_not_counted():
    s = stage(lines=[LineConfig(name="gate", start=(200, 0), end=(200, 100))])
    events = run(s, [[(1, x, 300)] for x in range(260, 140, -20)])
    assert events == []


def test_each_track_is_counted_on_its_own():
    s = stage(lines=[DOOR])
    frames = [[(1, x, 200), (2, x + 5, 300), (3, 400 - x, 100)] for x in range(260, 140, -20)]
    events = run(s, frames)
    assert sorted((e.track_id, e.payload["direction"]) for e in events) == [(1, "in"), (2, "in"), (3, "out")]
