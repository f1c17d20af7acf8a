"""COCO-style AP on hand-made cases."""
import numpy as np

from samples.world.metrics import (
    ImageEval,
    average_precision,
    box_iou,
    mean_average_precision,
)


def _img(dets, gts, ignore=None):
    d = np.asarray([x[:4] for x in dets], float).reshape(-1, 4)
    g = np.asarray(gts, float).reshape(-1, 4)
    return ImageEval(d, np.asarray([x[4] for x in dets], float), np.zeros(len(dets), int), g,
                     np.zeros(len(g), int), np.asarray(ignore if ignore is not None else [False] * len(g)))


def test_box_iou_of_half_overlapping_boxes():
    assert np.isclose(box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0], 50 / 150)


def test_perfect_detections_have_map_one():
    m = mean_average_precision([_img([(0, 0, 10, 10, 0.9)], [(0, 0, 10, 10)])], 1)
    assert m["map50"] == 1.0 and m["map50_95"] == 1.0


def test_a_higher_scored_false_positive_halves_precision_at_full_recall():
    # ranked FP then TP: precision envelope 0.5 at every recall point
    assert np.isclose(average_precision(np.array([0.9, 0.8]), np.array([False, True]), 1), 0.5)


def test_detections_on_ignored_objects_are_not_false_positives():
    img = _img([(0, 0, 10, 10, 0.9), (50, 50, 60, 60, 0.95)], [(0, 0, 10, 10), (50, 50, 60, 60)], [False, True])
    assert mean_average_precision([img], 1)["map50"] == 1.0


def test_loose_boxes_count_at_iou_05_but_not_at_095():
    m = mean_average_precision([_img([(0, 0, 10, 12, 0.9)], [(0, 0, 10, 10)])], 1)
    assert m["map50"] == 1.0 and m["map50_95"] < 1.0
