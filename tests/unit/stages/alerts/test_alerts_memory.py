"""What the alert rules remember per track stays bounded on endless streams with thousands of tracks."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import AlertRule, LineConfig, TrackerConfig, ZoneConfig
from pipeline.stages.alerts.rules import MAX_COOLDOWNS
from pipeline.stages.analytics.lines import MAX_TRACKS
from pipeline.stages.analytics.stage import AnalyticsStage
from pipeline.stages.tracking.stage import TrackingStage
from pipeline.types import Detections, Frame, FrameResult
from tests.support.tracks import CLASS_NAMES, NS_PER_FRAME, feet_box, run

SQUARE = ZoneConfig(name="square", polygon=[(100, 100), (300, 100), (300, 300), (100, 300)])
DOOR = LineConfig(name="door", start=(200, 0), end=(200, 400))
LEFT, RIGHT = (150, 200), (250, 200)  # inside the square on both sides of the door


def crossings(tracks: int) -> list[list[tuple]]:
    """Track i is left of the door on frame 2i and right of it on frame 2i + 1, then gone."""
    return [[(i, *side)] for i in range(tracks) for side in (LEFT, RIGHT)]


def stage(*rules: AlertRule) -> AnalyticsStage:
    return AnalyticsStage("cam-1", [SQUARE], [DOOR], list(rules), CLASS_NAMES)


def alerts(events) -> list:
    return [e for e in events if e.kind == "alert"]


def test_a_long_cooldown_remembers_at_most_max_cooldowns_tracks():
    rule = AlertRule(name="door", when="cross", line="door", cooldown_s=3600)
    analytics = stage(rule)
    fired = alerts(run(analytics, crossings(MAX_COOLDOWNS + 1000)))
    assert len(fired) == MAX_COOLDOWNS + 1000  # every track is new: none is cooling down
    assert len(analytics.rules._last_fired["door"]) == MAX_COOLDOWNS


def test_a_rule_without_cooldown_remembers_no_track():
    rule = AlertRule(name="door", when="cross", line="door", cooldown_s=0)
    analytics = stage(rule)
    assert len(alerts(run(analytics, crossings(3000)))) == 3000
    assert analytics.rules._last_fired["door"] == {}


def test_expired_cooldowns_are_forgotten():
    rule = AlertRule(name="door", when="cross", line="door", cooldown_s=1.0)  # 10 frames, 5 tracks
    analytics = stage(rule)
    assert len(alerts(run(analytics, crossings(3000)))) == 3000
    assert len(analytics.rules._last_fired["door"]) <= 5


def test_a_track_cooling_down_is_still_held_back_among_many():
    rule = AlertRule(name="door", when="cross", line="door", cooldown_s=3600)
    back_again = [[(7, *LEFT)], [(7, *RIGHT)]]  # track 7 crosses again, within the hour
    fired = alerts(run(stage(rule), crossings(2000) + back_again))
    assert len(fired) == 2000


def test_fired_visits_and_zone_and_line_state_stay_small_with_thousands_of_tracks():
    rules = [AlertRule(name="in", when="enter", zone="square"), AlertRule(name="stay", when="dwell", zone="square",
                                                                          min_seconds=0.1)]
    analytics = stage(*rules)
    fired = alerts(run(analytics, crossings(5000)))
    assert len(fired) == 2 * 5000
    missing_frames = 2 * 10 + 2  # no tracker says when tracks end: max_missing_s (2 s at 10 fps), and a crossing
    assert len(analytics.zones["square"].inside) <= missing_frames
    assert len(analytics.lines["door"]._side) == MAX_TRACKS  # a side is kept while the tracker may find the track
    assert len(analytics.rules._fired_visits) <= 256 + missing_frames


def test_zone_visits_end_with_the_tracks_the_tracker_gives_up_among_thousands():
    """Each of 2,000 people stands in the zone for 3 frames and is gone: a visit lasts while the tracker keeps the
    track (30 lost frames), so no more visits are open than the tracker has tracks, and every one of them ends."""
    everywhere = ZoneConfig(name="square", polygon=[(0, 0), (640, 0), (640, 480), (0, 480)])
    tracker = TrackingStage(TrackerConfig())
    analytics = AnalyticsStage("cam-1", [everywhere], [], [AlertRule(name="gone", when="exit", zone="square")],
                               CLASS_NAMES)
    spots = [(x, y) for x in range(40, 620, 40) for y in range(100, 470, 80)]  # far apart, and long gone when reused
    exits = 0
    for seq in range(3 * 2000 + 40):
        person = seq // 3
        feet = [spots[person % len(spots)]] if person < 2000 else []
        boxes = np.array([feet_box(x, y, w=30) for x, y in feet], np.float32).reshape(-1, 4)
        frame = Frame("cam-1", seq, seq * NS_PER_FRAME, seq * NS_PER_FRAME, None, 640, 480)
        result = FrameResult(frame, Detections(boxes, np.full(len(boxes), 0.9, np.float32),
                                               np.zeros(len(boxes), np.int32)), run_id="run")
        tracker.process(result)
        analytics.process(result)
        exits += sum(e.kind == "alert" for e in result.events)
        assert set(analytics.zones["square"].inside) <= set(tracker.tracker.active_track_ids.tolist())
    assert exits == analytics.zones["square"].entered_total == 2000
    assert analytics.zones["square"].inside == {}
