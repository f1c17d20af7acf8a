import pytest

from pipeline.config.models import AlertRule, LineConfig, ZoneConfig
from pipeline.errors import ConfigError
from pipeline.stages.analytics.stage import AnalyticsStage
from pipeline.types import make_event_id, track_uid
from tests.support.tracks import CLASS_NAMES, RUN, WALL_START_NS, moment, run, tracked_frame

SQUARE = ZoneConfig(name="square", polygon=[(100, 100), (300, 100), (300, 300), (100, 300)])
DOOR = LineConfig(name="door", start=(200, 0), end=(200, 400))
INSIDE, OUTSIDE = (200, 200), (50, 50)


def stage(*rules):
    return AnalyticsStage("cam-1", [SQUARE], [DOOR], list(rules), CLASS_NAMES)


def alerts(events):
    return [e for e in events if e.kind == "alert"]


def test_dwell_alert_fires_once_per_visit_after_min_seconds():
    rule = AlertRule(name="loiter", when="dwell", zone="square", classes=["person"], min_seconds=2.0)
    frames = [[(1, *INSIDE)]] * 50  # 5 s inside at 10 fps
    fired = alerts(run(stage(rule), frames))
    assert len(fired) == 1
    assert fired[0].ts_ns == 2_000_000_000 and fired[0].payload["dwell_s"] == pytest.approx(2.0)
    assert fired[0].event_id == make_event_id("cam-1", "alert:loiter", track_uid(RUN, 1), WALL_START_NS + 2_000_000_000)
    assert (fired[0].run_id, fired[0].wall_ns) == (RUN, WALL_START_NS + 2_000_000_000)


def test_dwell_alert_cooldown_suppresses_a_quick_second_visit():
    rule = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.0, cooldown_s=10.0)
    visit = [[(1, *INSIDE)]] * 15
    away = [[(1, *OUTSIDE)]] * 5
    late = [[(1, *OUTSIDE)]] * 100
    events = run(stage(rule), visit + away + visit + late + visit)
    fired = alerts(events)
    assert [e.ts_ns for e in fired] == [1_000_000_000, (15 + 5 + 15 + 100 + 10) * 100_000_000]


def test_dwell_alert_ignores_other_classes():
    rule = AlertRule(name="loiter", when="dwell", zone="square", classes=["person"], min_seconds=1.0)
    assert alerts(run(stage(rule), [[(1, *INSIDE, 2)]] * 30)) == []


def test_cross_alert_fires_for_inbound_vehicles_only():
    rule = AlertRule(name="car-in", when="cross", line="door", direction="in", classes=["car", "bicycle"])
    inbound = [[(1, x, 350, 2), (2, x, 380, 0)] for x in range(260, 140, -20)]
    outbound = [[(1, x, 350, 2)] for x in range(140, 280, 20)]
    fired = alerts(run(stage(rule), inbound + outbound))
    assert [(e.track_id, e.payload["direction"]) for e in fired] == [(1, "in")]


def test_occupancy_alert_needs_the_count_for_the_debounce_time_and_rearms():
    rule = AlertRule(name="crowd", when="occupancy", zone="square", min_count=2, debounce_s=0.5, cooldown_s=0)
    two = [[(1, *INSIDE), (2, 150, 150)]]
    one = [[(1, *INSIDE), (2, *OUTSIDE)]]
    frames = two * 3 + one * 2 + two * 10 + one + two * 10
    fired = alerts(run(stage(rule), frames))
    assert [e.ts_ns // 100_000_000 for e in fired] == [10, 21]
    assert fired[0].payload["count"] == 2 and fired[0].track_id == -1


def test_enter_with_debounce_ignores_a_brief_visit():
    rule = AlertRule(name="entry", when="enter", zone="square", debounce_s=0.5)
    brief = [[(1, *INSIDE)]] * 3 + [[(1, *OUTSIDE)]] * 2
    stay = [[(2, *INSIDE)]] * 10
    fired = alerts(run(stage(rule), brief + stay))
    assert [e.track_id for e in fired] == [2]


def test_exit_alert_fires_on_leaving_but_not_at_stream_end():
    rule = AlertRule(name="left", when="exit", zone="square")
    s = stage(rule)
    fired = alerts(run(s, [[(1, *INSIDE), (2, *INSIDE)]] * 3 + [[(1, *OUTSIDE), (2, *INSIDE)]]))
    assert [e.track_id for e in fired] == [1] and fired[0].payload["dwell_s"] == pytest.approx(0.3)
    assert alerts(s.end(moment(100))) == []


def test_a_replay_in_the_same_run_gives_the_same_ids_and_another_run_new_ones():
    rule = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=0.5)
    frames = [[(1, *INSIDE), (2, 150, 150)]] * 10
    first = run(stage(rule), frames)
    assert [e.event_id for e in first] == [e.event_id for e in run(stage(rule), frames)]
    later = run(stage(rule), frames, run_id="20250102T000000.000Z-0000beef")  # same tracks, same times
    assert [(e.kind, e.ts_ns, e.track_id) for e in later] == [(e.kind, e.ts_ns, e.track_id) for e in first]
    assert not {e.event_id for e in later} & {e.event_id for e in first}


def test_rule_with_unknown_class_is_a_config_error():
    with pytest.raises(ConfigError, match="alert rule 'x'"):
        stage(AlertRule(name="x", when="dwell", zone="square", classes=["dragon"]))


def test_a_track_no_longer_seen_fires_neither_enter_nor_dwell_for_time_it_was_not_there():
    entry = AlertRule(name="entry", when="enter", zone="square", debounce_s=0.5)
    loiter = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.5)
    events = run(stage(entry, loiter), [[(1, *INSIDE)]] * 2 + [[]] * 30)  # seen 0.1 s, then gone out of the picture
    assert alerts(events) == []
    assert [(e.kind, e.payload["reason"]) for e in events if e.kind == "zone_exit"] == [("zone_exit", "lost")]


def test_a_track_hidden_past_the_dwell_time_fires_when_it_is_seen_again_with_its_whole_stay():
    loiter = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.5)
    fired = alerts(run(stage(loiter), [[(1, *INSIDE)]] * 10 + [[]] * 10 + [[(1, *INSIDE)]] * 5))  # hidden 1.0-2.0 s
    assert [(e.ts_ns, e.payload["dwell_s"]) for e in fired] == [(2_000_000_000, 2.0)]


def test_a_visit_that_reaches_its_dwell_during_the_cooldown_fires_once_the_cooldown_has_run_out():
    rule = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.0, cooldown_s=10.0)
    first, away, long_stay = [[(1, *INSIDE)]] * 15, [[(1, *OUTSIDE)]] * 5, [[(1, *INSIDE)]] * 150
    fired = alerts(run(stage(rule), first + away + long_stay))  # the second visit from 2.0 s, 15 s long
    assert [(e.ts_ns, e.payload["dwell_s"]) for e in fired] == [(1_000_000_000, 1.0), (11_000_000_000, 9.0)]


def test_a_rule_changed_only_in_what_it_brings_does_not_fire_again_for_what_it_fired_for():
    loiter = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.0, cooldown_s=0)
    crowd = AlertRule(name="crowd", when="occupancy", zone="square", min_count=2, cooldown_s=0)
    analytics = stage(loiter, crowd)
    two_inside = [[(1, *INSIDE), (2, 150, 150)]]
    events = run(analytics, two_inside * 20)
    assert sorted((e.rule, e.track_id) for e in alerts(events)) == [("crowd", -1), ("loiter", 1), ("loiter", 2)]
    changed = [rule.model_copy(update={"clip": True, "cooldown_s": 5.0}) for rule in (loiter, crowd)]
    analytics.reconfigure([SQUARE], [DOOR], changed, moment(19))
    later = [tracked_frame(i, [(1, *INSIDE), (2, 150, 150)]) for i in range(20, 40)]
    for result in later:
        analytics.process(result)
    assert alerts([e for result in later for e in result.events]) == []
    stricter = [loiter.model_copy(update={"min_seconds": 0.5})]  # its condition changed: it starts afresh
    analytics.reconfigure([SQUARE], [DOOR], stricter, moment(39))
    again = tracked_frame(40, [(1, *INSIDE), (2, 150, 150)])
    analytics.process(again)
    assert sorted(e.track_id for e in alerts(again.events)) == [1, 2]


def test_a_coasting_prediction_is_not_a_detection_a_dwell_alert_fires_on():
    loiter = AlertRule(name="loiter", when="dwell", zone="square", min_seconds=1.5)
    detected, coasting = [(1, *INSIDE)], [(1, *INSIDE, 0, 0.0)]  # score 0: the tracker's predicted box
    fired = alerts(run(stage(loiter), [detected] * 14 + [coasting] * 3 + [detected] * 3))
    assert [e.ts_ns for e in fired] == [1_700_000_000]  # not at 1.5 s on a prediction: at the next detection
