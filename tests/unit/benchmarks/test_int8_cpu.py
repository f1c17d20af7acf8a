"""The INT8 check's mAP@0.5 against reference detections (the demo's COCO-style metric): matches need the
class, the frame and IoU >= 0.5."""
import numpy as np

from benchmarks.int8_cpu import map50
from pipeline.types import Detections


def dets(boxes, scores, classes) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int32))


BOXES = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]]


def test_the_reference_against_itself_scores_one_and_a_wrong_class_or_place_scores_nothing():
    truth = [dets(BOXES, [0.9, 0.8, 0.7], [1, 1, 2]), dets(BOXES[:1], [0.6], [2])]
    assert map50(truth, truth) == 1.0
    wrong_class = [dets(BOXES, [0.9, 0.8, 0.7], [3, 3, 3]), dets(BOXES[:1], [0.6], [1])]
    assert map50(wrong_class, truth) == 0.0
    moved = [dets(np.asarray(BOXES) + 9, [0.9, 0.8, 0.7], [1, 1, 2]), dets(BOXES[:1], [0.6], [1])]
    assert map50(moved, truth) == 0.0  # each box moved by 9 px overlaps its own by IoU < 0.2


def test_missed_boxes_and_duplicates_lower_recall_and_precision():
    truth = [dets(BOXES[:2], [0.9, 0.8], [1, 1])]
    half = map50([dets(BOXES[:1], [0.9], [1])], truth)
    assert 0.5 <= half < 0.51  # recall 1/2 at precision 1 (101-point interpolation)
    duplicate = map50([dets([BOXES[0], BOXES[0], BOXES[1]], [0.9, 0.85, 0.8], [1, 1, 1])], truth)
    assert half < duplicate < 1.0  # the second box found, at precision 2/3
