"""Ground-truth events agree with the objects' anchor positions."""
import numpy as np

from samples.world import World, viewpoint_geometry
from samples.world.events import (
    anchor_tracks,
    clip_events,
    inside_polygon,
    line_crossings,
    zone_visits,
)


def _side(a, b, p):
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def test_line_crossing_directions_follow_the_cross_product_sign():
    frames = np.arange(4)
    anchors = np.array([[10.0, 5], [4, 5], [-3, 5], [6, 5]])  # right -> left -> right across x = 0
    crossings = line_crossings(frames, anchors, (0, 0), (0, 10))
    assert crossings == [(2, "in"), (3, "out")]
    # passing beside the segment (below its end) is not a crossing
    assert line_crossings(frames, anchors + [0, 20], (0, 0), (0, 10)) == []


def test_zone_visit_reports_entry_exit_frames():
    frames = np.arange(6)
    anchors = np.array([[-1.0, 1], [1, 1], [2, 2], [5, 5], [1, 1], [0.5, 0.5]])
    assert zone_visits(frames, anchors, [[0, 0], [3, 0], [3, 3], [0, 3]]) == [(1, 3), (4, None)]


def test_every_recorded_crossing_is_between_anchors_on_opposite_sides():
    world = World("plaza", seed=3, size=(640, 360), fps=15)
    truth = clip_events(world, 600)
    tracks = anchor_tracks(world, 600)
    lines = truth["geometry"]["lines"]
    crossings = [e for e in truth["events"] if e["kind"] == "line_cross"]
    assert len(crossings) >= 10
    for e in crossings:
        _, frames, anchors = tracks[e["track_id"]]
        k = int(np.flatnonzero(frames == e["frame"])[0])
        a, b = lines[e["rule"]]
        before, after = _side(a, b, anchors[k - 1]), _side(a, b, anchors[k])
        assert (before <= 0 < after) if e["direction"] == "in" else (after <= 0 < before)
        assert e["pts_ns"] == round(e["frame"] * 1e9 / 15)


def test_vehicles_on_the_road_are_counted_in_their_driving_direction():
    world = World("street", seed=4, size=(640, 360), fps=15)
    truth = clip_events(world, 900)
    tracks = anchor_tracks(world, 900)
    for e in truth["events"]:
        if e["kind"] == "line_cross" and e["class_id"] >= 2:
            _, frames, anchors = tracks[e["track_id"]]
            moving_right = anchors[-1, 0] > anchors[0, 0]
            # the counting lines are drawn top to bottom, so moving right crosses "out"
            assert e["direction"] == ("out" if moving_right else "in")
    counts = truth["line_counts"]
    assert counts["eastbound"]["out"] > 0 and counts["westbound"]["in"] > 0


def test_zone_dwell_times_match_the_frames_spent_inside():
    world = World("plaza", seed=6, size=(640, 360), fps=10)
    truth = clip_events(world, 900)
    tracks = anchor_tracks(world, 900)
    poly = viewpoint_geometry("plaza", (640, 360))["zones"]["square"]
    exits = [e for e in truth["events"] if e["kind"] == "zone_exit"]
    assert exits
    for e in exits:
        enter = max(x["frame"] for x in truth["events"] if x["kind"] == "zone_enter"
                    and x["track_id"] == e["track_id"] and x["frame"] < e["frame"])
        assert abs(e["dwell_s"] - (e["frame"] - enter) / 10) < 1e-6
        _, frames, anchors = tracks[e["track_id"]]
        inside = inside_polygon(anchors[(frames >= enter) & (frames < e["frame"])], poly)
        assert inside.all()


def test_geometry_scales_with_the_frame_size():
    small = viewpoint_geometry("junction", (640, 360))
    large = viewpoint_geometry("junction", (1280, 720))
    for name, line in small["lines"].items():
        assert np.allclose(np.asarray(large["lines"][name]), 2 * np.asarray(line), atol=0.02)
    assert set(small["zones"]) == {"corner"}
