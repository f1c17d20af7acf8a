"""The demo scoring helper rewards the ground truth and punishes misses, false boxes and id switches."""
import pytest

from samples.world import World
from samples.world.scoring import score_stream

URL = "synthetic://plaza?seed=3&fps=15&size=640x360"


@pytest.fixture(scope="module")
def truth_rows():
    world = World("plaza", 3, (640, 360), 15)
    return [
        {"pts_ns": round(i * 1e9 / 15), "xyxy": gt.box, "class_id": gt.class_id, "score": 0.9, "track_id": gt.track_id}
        for i in range(240)
        for gt in world.ground_truth(i)
    ]


def test_ground_truth_as_detections_scores_perfectly(truth_rows):
    report = score_stream(URL, truth_rows)
    assert report["frames"] == 240
    assert report["detection"]["precision"] == 1.0 and report["detection"]["recall"] == 1.0
    assert report["idf1"] > 0.98
    assert report["line_count_accuracy"] == 1.0
    assert sum(report["line_counts"]["truth"]["road"].values()) > 0


def test_missing_and_false_detections_lower_recall_and_precision(truth_rows):
    kept = truth_rows[::2]
    ghosts = [dict(r, xyxy=(0, 0, 30, 30), class_id=4) for r in truth_rows[:100]]
    report = score_stream(URL, kept + ghosts, frames=range(240))
    assert 0.35 < report["detection"]["recall"] < 0.65
    assert report["detection"]["precision"] < 0.95
    assert report["detection"]["per_class"]["truck"]["fp"] >= 100


def test_swapping_track_ids_halfway_lowers_idf1(truth_rows):
    swapped = [dict(r, track_id=r["track_id"] + (10**7 if r["pts_ns"] > 8e9 else 0)) for r in truth_rows]
    assert score_stream(URL, swapped)["idf1"] < 0.8


def test_untracked_detections_get_no_identity_score(truth_rows):
    report = score_stream(URL, [dict(r, track_id=-1) for r in truth_rows[:200]])
    assert "idf1" not in report and report["detection"]["precision"] == 1.0
