import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking import kalman
from pipeline.stages.tracking.bytetrack import ByteTracker
from pipeline.stages.tracking.matching import iou_matrix, linear_assignment
from pipeline.types import Detections


def dets(rows):
    """rows: (x1, y1, x2, y2, score[, class_id])."""
    if not rows:
        return Detections.empty()
    arr = np.array([list(r) + [0] * (6 - len(r)) for r in rows], np.float64)
    return Detections(arr[:, :4].astype(np.float32), arr[:, 4].astype(np.float32), arr[:, 5].astype(np.int32))


def walker(step, x0=100.0, y0=100.0, vx=5.0, score=0.9, cls=0):
    return (x0 + vx * step, y0, x0 + vx * step + 40, y0 + 100, score, cls)


def ids_by_x(out):
    return [int(t) for t in out.track_id[np.argsort(out.xyxy[:, 0])]]


def test_iou_matrix_and_assignment_respect_threshold():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float64)
    b = np.array([[100, 100, 110, 110], [0, 0, 10, 5], [500, 500, 510, 510]], np.float64)
    iou = iou_matrix(a, b)
    np.testing.assert_allclose(iou[:, :2], [[0, 0.5], [1, 0]])
    pairs = linear_assignment(1 - iou, max_cost=0.6)
    assert pairs.tolist() == [[0, 1], [1, 0]]
    assert linear_assignment(1 - iou, max_cost=0.4).tolist() == [[1, 0]]


def test_assignment_takes_lone_pairs_directly_and_solves_the_contested_rest_in_row_order():
    cost = np.array([
        [0.2, 0.3, 1.0, 1.0],  # rows 0 and 1 contest columns 0 and 1
        [0.1, 0.6, 1.0, 1.0],
        [1.0, 1.0, 1.0, 0.4],  # each other's only option
        [1.0, 1.0, 1.0, 1.0],  # no option
        [1.0, 0.9, 1.0, 1.0],  # above the limit
    ])
    assert linear_assignment(cost, max_cost=0.8).tolist() == [[0, 1], [1, 0], [2, 3]]


def test_new_track_is_reported_from_its_second_hit_with_id_one():
    tracker = ByteTracker(TrackerConfig(min_hits=2))
    assert len(tracker.update(dets([walker(0)]))) == 0
    out = tracker.update(dets([walker(1)]))
    assert out.track_id.tolist() == [1]


def test_two_walkers_keep_their_ids_while_crossing_paths_vertically_apart():
    tracker = ByteTracker()
    for step in range(40):
        out = tracker.update(dets([walker(step, y0=100), walker(step, x0=400, y0=400, vx=-5)]))
    assert sorted(out.track_id.tolist()) == [1, 2]
    top = out.track_id[np.argmin(out.xyxy[:, 1])]
    assert top == 1  # the first-seen (top) walker kept id 1


def test_ids_are_allocated_per_tracker_instance_and_go_on_after_a_reset():
    first, second = ByteTracker(), ByteTracker()
    for step in range(3):
        first.update(dets([walker(step), walker(step, y0=400)]))
    for step in range(3):
        out = second.update(dets([walker(step, x0=600)]))
    assert out.track_id.tolist() == [1]
    first.reset()
    for step in range(3):
        out = first.update(dets([walker(step)]))
    assert out.track_id.tolist() == [3]  # the tracks are gone, their ids are not given again


def test_track_survives_a_gap_shorter_than_max_lost_frames():
    tracker = ByteTracker(TrackerConfig(max_lost_frames=10, coast_frames=0))
    for step in range(10):
        tracker.update(dets([walker(step)]))
    for step in range(10, 18):  # 8 frames unseen
        assert len(tracker.update(dets([]))) == 0
    out = tracker.update(dets([walker(18)]))
    assert out.track_id.tolist() == [1]


def test_track_dies_after_max_lost_frames_and_a_return_gets_a_new_id():
    tracker = ByteTracker(TrackerConfig(max_lost_frames=5, coast_frames=0))
    for step in range(10):
        tracker.update(dets([walker(step, vx=0)]))
    for _ in range(6):
        tracker.update(dets([]))
    assert tracker.active_track_ids.tolist() == []
    tracker.update(dets([walker(0, vx=0)]))
    out = tracker.update(dets([walker(0, vx=0)]))
    assert out.track_id.tolist() == [2]


def test_low_score_detections_keep_an_occluded_track_but_never_start_one():
    tracker = ByteTracker(TrackerConfig(high_threshold=0.5, low_threshold=0.1, coast_frames=0))
    for step in range(5):
        tracker.update(dets([walker(step)]))
    for step in range(5, 15):  # partly occluded: the detector's score drops
        out = tracker.update(dets([walker(step, score=0.3), walker(step, y0=500, score=0.3)]))
        assert out.track_id.tolist() == [1], f"frame {step}"
        assert out.score.tolist() == pytest.approx([0.3])
    out = tracker.update(dets([walker(15, score=0.9)]))
    assert out.track_id.tolist() == [1]


def test_detections_below_low_threshold_are_ignored():
    tracker = ByteTracker(TrackerConfig(low_threshold=0.2, coast_frames=0))
    for step in range(5):
        tracker.update(dets([walker(step)]))
    assert len(tracker.update(dets([walker(5, score=0.1)]))) == 0


def test_lost_track_coasts_with_score_zero_for_coast_frames():
    tracker = ByteTracker(TrackerConfig(coast_frames=2))
    for step in range(10):
        tracker.update(dets([walker(step)]))
    first, second, third = (tracker.update(dets([])) for _ in range(3))
    assert first.track_id.tolist() == [1] and first.score.tolist() == [0.0]
    assert second.xyxy[0, 0] > first.xyxy[0, 0]  # keeps moving right
    assert len(third) == 0


def test_a_track_ended_before_its_coast_frames_are_over_is_not_reported():
    tracker = ByteTracker(TrackerConfig(max_lost_frames=1, coast_frames=5))
    for step in range(10):
        tracker.update(dets([walker(step)]))
    assert tracker.update(dets([])).track_id.tolist() == [1]
    assert len(tracker.update(dets([]))) == 0
    assert len(tracker.active_track_ids) == 0


def test_with_min_hits_one_a_new_track_is_reported_at_once_between_the_matched_and_the_coasted_rows():
    tracker = ByteTracker(TrackerConfig(min_hits=1, coast_frames=3))
    for step in range(5):
        tracker.update(dets([walker(step), walker(step, y0=400.0)]))
    out = tracker.update(dets([walker(5, y0=400.0), walker(0, x0=700.0, vx=0.0)]))
    assert out.track_id.tolist() == [2, 3, 1]
    assert out.score.tolist() == pytest.approx([0.9, 0.9, 0.0])
    assert out.xyxy[1].tolist() == [700.0, 100.0, 740.0, 200.0]  # the new track's own detection box
    assert tracker.matched_ids.tolist() == [2, 3]


def test_association_is_class_aware():
    tracker = ByteTracker(TrackerConfig(coast_frames=0))
    for step in range(3):
        tracker.update(dets([walker(step, cls=0)]))
    for step in range(3, 5):
        out = tracker.update(dets([walker(step, cls=2)]))
    assert out.track_id.tolist() == [2] and out.class_id.tolist() == [2]



@pytest.mark.parametrize("key", ["match_iou", "low_match_iou"])
def test_a_minimum_overlap_of_zero_is_refused_as_it_would_match_boxes_that_do_not_touch(key):
    """At 0 a person's track would take a car's detection across the frame (no overlap, and no overlap across
    classes either, is similarity 0, which reaches a minimum of 0)."""
    with pytest.raises(ValidationError, match=key):
        TrackerConfig(**{key: 0})
    assert TrackerConfig(**{key: 0.01})

def test_unconfirmed_clutter_burns_no_ids():
    tracker = ByteTracker()
    rng = np.random.default_rng(1)
    for _ in range(20):  # one-frame false positives at random places
        x, y = rng.uniform(0, 1000, 2)
        tracker.update(dets([(x, y, x + 30, y + 30, 0.9)]))
    for step in range(3):
        out = tracker.update(dets([walker(step, x0=2000)]))
    assert out.track_id.tolist() == [1]


def test_output_rows_follow_input_order_and_keep_frame_idx():
    tracker = ByteTracker(TrackerConfig(coast_frames=0))
    for step in range(3):
        d = dets([walker(step, x0=500), walker(step, x0=100)])
        d.frame_idx[:] = 4
        out = tracker.update(d)
    assert out.frame_idx.tolist() == [4, 4]
    assert out.xyxy[0, 0] > out.xyxy[1, 0]


def test_assignment_shortcut_agrees_with_the_full_solver():
    import lap

    rng = np.random.default_rng(3)
    for _ in range(200):
        n, m = rng.integers(1, 12, 2)
        cost = np.where(rng.random((n, m)) < 0.25, rng.random((n, m)) * 0.8, 1.0)
        _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=0.8)
        full = sorted((r, int(c)) for r, c in enumerate(x) if c >= 0 and cost[r, c] <= 0.8)
        ours = linear_assignment(cost, 0.8)
        assert cost[ours[:, 0], ours[:, 1]].sum() == pytest.approx(sum(cost[r, c] for r, c in full))
        assert len(ours) == len(full)


def turning_car(frame, h=60.0):
    """A car crossing at a fifth of its height a frame that, from frame 8, turns away over five frames: its box
    narrows from 2.2 to 0.8 times its height while its sideways speed drops to nothing and it moves up."""
    def turned(f):
        return min(max(f - 8, 0) / 5, 1.0)
    t = turned(frame)
    x = 100.0 + sum(0.2 * h * (1.0 - turned(f)) for f in range(frame))
    y = 300.0 - 10.0 * max(frame - 8, 0) * t
    w = (2.2 - 1.4 * t) * h
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2, 0.9)


def test_a_car_that_turns_keeps_its_track(monkeypatch):
    def follow_the_car():
        """Ids matched to the car from frame 1 on, and its track's aspect (width / height) on frame 12, mid-turn."""
        tracker = ByteTracker()
        ids = []
        for frame in range(25):
            out = tracker.update(dets([turning_car(frame)]))
            ids.append(int(tracker.matched_ids[0]))
            if frame == 12:
                x1, y1, x2, y2 = out.xyxy[0]
                aspect = (x2 - x1) / (y2 - y1)
        return ids[1:], aspect

    x1, y1, x2, y2, _ = turning_car(12)
    seen = (x2 - x1) / (y2 - y1)  # 1.08, from 2.2
    ids, aspect = follow_the_car()
    assert ids == [1] * 24
    assert abs(aspect - seen) < 0.1  # the track's shape follows the turn
    # With ByteTrack's nearly fixed aspect the track keeps the car's old shape, so its prediction overlaps the
    # narrowed box less (here a new track took the car on frame 13).
    monkeypatch.setattr(kalman, "ASPECT_CHANGE_PER_SPEED", 0.0)
    _, aspect = follow_the_car()
    assert aspect > seen + 0.5


def test_a_standing_box_keeps_bytetracks_aspect_smoothing(monkeypatch):
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 3, (30, 4))

    def boxes():
        tracker = ByteTracker()
        return [tracker.update(dets([(100 + j[0], 100 + j[1], 140 + j[2], 200 + j[3], 0.9)])).xyxy.copy()
                for j in jitter]

    # Only the small velocity the filter reads into the jitter adds to the aspect's noise: the boxes stay within a
    # quarter of a pixel of ByteTrack's (the jitter is 3 px).
    now = np.concatenate(boxes())
    monkeypatch.setattr(kalman, "ASPECT_CHANGE_PER_SPEED", 0.0)
    np.testing.assert_allclose(now, np.concatenate(boxes()), atol=0.25)
