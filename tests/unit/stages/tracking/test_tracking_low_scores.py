"""`low_scores`: ByteTrack's separate second stage, SORT's joint one, and the adaptive choice between them."""
import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.bytetrack import ByteTracker
from pipeline.types import Detections

PEOPLE_X = (100.0, 300.0, 500.0, 700.0)  # four people 40 x 100 px at y = 100, walking right at 2 px a frame
CLUTTER_X = (100.0, 250.0, 400.0, 550.0, 700.0)  # five false boxes of the same size at y = 400


def frame(xs, scores, ys=None):
    xs = np.asarray(xs, np.float32)
    ys = np.full_like(xs, 100) if ys is None else np.asarray(ys, np.float32)
    xyxy = np.column_stack([xs, ys, xs + 40, ys + 100])
    return Detections(xyxy, np.asarray(scores, np.float32), np.zeros(len(xs), np.int32))


def warm_up(tracker, clutter):
    """40 frames of the four people: seen confidently for 5 frames, then each at a low score (0.3), as a detector
    scores people it sees partly hidden; with `clutter`, also five low-score false boxes at fixed background places."""
    for f in range(40):
        xs = [x + 2 * f for x in PEOPLE_X]
        scores = [0.9 if f < 5 else 0.3] * 4
        ys = [100.0] * 4
        if clutter:
            xs, scores, ys = xs + list(CLUTTER_X), scores + [0.3] * 5, ys + [400.0] * 5
        out = tracker.update(frame(xs, scores, ys))
    assert sorted(out.track_id[:4].tolist()) == [1, 2, 3, 4]


def first_person_after_a_jump(tracker):
    """The first person's next low-score detection lands 15 px further right than expected: IoU 0.45 with the
    prediction, below the second stage's 0.5. Returns the id it was matched to (-1: none)."""
    xs = [x + 2 * 40 for x in PEOPLE_X]
    xs[0] += 15
    tracker.update(frame(xs, [0.3] * 4))
    return int(tracker.matched_ids[0])


def test_separate_keeps_low_scores_off_tracks_they_overlap_little_and_never_starts_a_track_with_one():
    tracker = ByteTracker(TrackerConfig(low_scores="separate"))
    warm_up(tracker, clutter=False)
    assert first_person_after_a_jump(tracker) == -1

    fresh = ByteTracker(TrackerConfig(low_scores="separate", min_hits=1))
    fresh.update(frame([100.0], [0.3]))
    assert fresh.matched_ids.tolist() == [-1] and len(fresh.active_track_ids) == 0


def test_joint_matches_low_scores_at_iou_0_3_and_starts_tracks_from_0_25():
    tracker = ByteTracker(TrackerConfig(low_scores="joint"))
    warm_up(tracker, clutter=False)
    assert first_person_after_a_jump(tracker) == 1

    fresh = ByteTracker(TrackerConfig(low_scores="joint", min_hits=1))
    fresh.update(frame([100.0, 300.0], [0.3, 0.2]))
    assert fresh.matched_ids.tolist() == [1, -1]


def test_adaptive_goes_joint_when_the_low_scores_lie_on_tracks():
    tracker = ByteTracker(TrackerConfig())  # adaptive is the default
    warm_up(tracker, clutter=False)  # 140 low-score detections, every one on its person's track
    assert first_person_after_a_jump(tracker) == 1


def test_adaptive_stays_separate_when_the_low_scores_are_clutter():
    tracker = ByteTracker(TrackerConfig())
    warm_up(tracker, clutter=True)  # most low-score detections lie on no track: the background boxes
    assert first_person_after_a_jump(tracker) == -1
    assert sorted(tracker.active_track_ids.tolist()) == [1, 2, 3, 4]  # the clutter never started a track

    joint = ByteTracker(TrackerConfig(low_scores="joint"))
    warm_up(joint, clutter=True)
    assert len(joint.active_track_ids) == 9  # as SORT would: the background boxes are tracked


def test_adaptive_waits_for_enough_low_score_detections():
    tracker = ByteTracker(TrackerConfig())
    for f in range(10):  # 20 low-score detections on tracks: too few to judge the detector by
        xs = [x + 2 * f for x in PEOPLE_X]
        tracker.update(frame(xs, [0.9, 0.9, 0.9, 0.9] if f < 5 else [0.3, 0.3, 0.3, 0.3]))
    xs = [x + 2 * 10 for x in PEOPLE_X]
    xs[0] += 15
    tracker.update(frame(xs, [0.3] * 4))
    assert tracker.matched_ids[0] == -1
