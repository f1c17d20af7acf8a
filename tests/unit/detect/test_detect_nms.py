"""The numpy reference NMS: class-aware, per image, capped, with deterministic ties."""
import numpy as np

from pipeline.detect.nms import batched_nms, candidates, top_k


def _nms(boxes, scores, classes=None, images=None, iou=0.5, cap=100):
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    classes = np.zeros(n, np.int32) if classes is None else np.asarray(classes, np.int32)
    images = np.zeros(n, np.int32) if images is None else np.asarray(images, np.int32)
    return batched_nms(boxes, np.asarray(scores, np.float32), classes, images, iou, cap).tolist()


def test_overlapping_box_of_lower_score_is_suppressed():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]
    assert _nms(boxes, [0.8, 0.9, 0.7]) == [1, 2]


def test_overlap_at_or_below_the_threshold_is_kept():
    boxes = [[0, 0, 10, 10], [5, 0, 15, 10]]  # IoU = 50 / 150 = 1/3
    assert _nms(boxes, [0.9, 0.8], iou=1 / 3 + 1e-6) == [0, 1]
    assert _nms(boxes, [0.9, 0.8], iou=0.3) == [0]


def test_boxes_of_different_classes_do_not_suppress_each_other():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10]]
    assert _nms(boxes, [0.9, 0.8], classes=[0, 1]) == [0, 1]
    assert _nms(boxes, [0.9, 0.8], classes=[1, 1]) == [0]


def test_images_of_a_batch_are_independent_and_grouped_in_order():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    assert _nms(boxes, [0.5, 0.9, 0.7], images=[1, 0, 1]) == [1, 2]


def test_max_per_image_keeps_the_best_of_each_image():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(6)]
    scores = [0.1, 0.6, 0.3, 0.9, 0.5, 0.2]
    assert _nms(boxes, scores, images=[0, 0, 0, 1, 1, 1], cap=2) == [1, 2, 3, 4]


def test_the_cap_per_image_keeps_what_uncapped_nms_ranks_first_in_each_image():
    # each (image, class) group stops once it kept `cap` boxes: the result must be that of NMS over every box
    rng = np.random.default_rng(7)
    for trial in range(40):
        n = int(rng.integers(1, 400))
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        boxes = np.hstack([xy, xy + rng.uniform(1, 40, (n, 2)).astype(np.float32)])
        scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # ties, broken by index
        classes, images = rng.integers(0, 3, n).astype(np.int32), rng.integers(0, 2, n).astype(np.int32)
        cap = int(rng.integers(1, 30))
        every = batched_nms(boxes, scores, classes, images, 0.5, n)
        expected = np.concatenate([every[images[every] == i][:cap] for i in (0, 1)])
        assert batched_nms(boxes, scores, classes, images, 0.5, cap).tolist() == expected.tolist(), trial


def test_equal_scores_keep_the_lower_index_first():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]]
    assert _nms(boxes, [0.5, 0.5, 0.5, 0.5]) == [0, 2, 3]


def test_empty_input_gives_empty_int64_keep():
    keep = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32), 0.5, 10)
    assert keep.dtype == np.int64 and keep.shape == (0,)


def test_candidates_filter_by_confidence_and_class_and_flatten_rows():
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    scores = np.asarray([[0.9, 0.1, 0.5], [0.3, 0.8, 0.2]], np.float32)
    classes = np.asarray([[0, 1, 2], [2, 0, 1]], np.int32)
    b, s, c, rows = candidates(boxes, scores, classes, 0.25)
    assert rows.tolist() == [0, 0, 1, 1] and c.tolist() == [0, 2, 2, 0]
    assert b[3].tolist() == boxes[1, 1].tolist()
    _, _, c, rows = candidates(boxes, scores, classes, 0.25, class_filter=np.asarray([2]))
    assert c.tolist() == [2, 2] and rows.tolist() == [0, 1]


def test_candidates_are_capped_per_image_by_score():
    scores = np.asarray([[0.5, 0.9, 0.7, 0.6]], np.float32)
    boxes = np.zeros((1, 4, 4), np.float32)
    _, s, _, _ = candidates(boxes, scores, np.zeros((1, 4), np.int32), 0.1, max_candidates=2)
    assert sorted(s.tolist()) == [np.float32(0.7), np.float32(0.9)]


def test_top_k_orders_like_nms_without_suppressing():
    scores = np.asarray([0.2, 0.9, 0.9, 0.4], np.float32)
    assert top_k(scores, np.asarray([0, 0, 0, 1], np.int32), 2).tolist() == [1, 2, 3]
