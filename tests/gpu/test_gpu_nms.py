"""GPU NMS returns exactly the numpy reference's indices, on random and on real detector outputs."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect import heads, nms, nms_gpu
from tests.gpu.helpers import decode_clip, gpu_file


def _random_case(seed: int, m: int, images: int, classes: int):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (m, 2)).astype(np.float32)
    wh = rng.uniform(4, 120, (m, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    # clusters of near-duplicates and exact duplicates, the cases NMS exists for
    dup = rng.integers(0, m, m // 3)
    boxes[dup[: len(dup) // 2]] = boxes[dup[len(dup) // 2 : 2 * (len(dup) // 2)]] + rng.normal(0, 2, (len(dup) // 2, 4))
    scores = rng.choice(np.linspace(0.05, 1, 40), m).astype(np.float32)  # many exact ties
    return (boxes.astype(np.float32), scores, rng.integers(0, classes, m).astype(np.int32),
            rng.integers(0, images, m).astype(np.int32))


@pytest.mark.parametrize("seed,m,images,classes", [(0, 50, 1, 1), (1, 2000, 8, 5), (2, 9000, 32, 80), (3, 300, 4, 2),
                                                   (4, 5000, 1, 1)])
@pytest.mark.parametrize("iou", [0.45, 0.7])
def test_gpu_nms_keeps_exactly_the_reference_indices_on_random_boxes(seed, m, images, classes, iou):
    import cupy

    boxes, scores, class_ids, batch_idx = _random_case(seed, m, images, classes)
    expected = nms.batched_nms(boxes, scores, class_ids, batch_idx, iou, 100)
    got = nms_gpu.batched_nms(*(cupy.asarray(a) for a in (boxes, scores, class_ids, batch_idx)), iou, 100)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.get(), expected)


@pytest.mark.parametrize("seed,m,images,cap", [(5, 400, 3, 50), (6, 3000, 16, 100), (7, 20, 1, 300)])
def test_gpu_top_k_without_suppression_matches_the_reference(seed, m, images, cap):
    import cupy

    boxes, scores, class_ids, batch_idx = _random_case(seed, m, images, 3)
    expected = nms.top_k(scores, batch_idx, cap)
    order, kept = nms_gpu.ranked_keep(*(cupy.asarray(a) for a in (boxes, scores, class_ids, batch_idx)), None, cap)
    order, kept = order.get(), kept.get()
    np.testing.assert_array_equal(order[kept], expected)


def test_gpu_nms_of_nothing_is_an_empty_int64_array():
    import cupy

    empty = cupy.zeros((0, 4), np.float32)
    got = nms_gpu.batched_nms(empty, cupy.zeros(0, np.float32), cupy.zeros(0, np.int32), cupy.zeros(0, np.int32), 0.5, 10)
    assert got.shape == (0,) and got.dtype == np.int64


def test_gpu_nms_matches_the_reference_on_real_yolox_outputs(report):
    import cupy
    import onnxruntime as ort

    from pipeline.detect.preprocess import PreprocessSpec, allocate, preprocess_into

    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    frames = decode_clip(gpu_file("media/person-bicycle-car-detection.mp4"), "cpu", limit=8)
    spec = PreprocessSpec(416, 416, align="top_left", color="bgr", scale=1.0)
    batch = allocate(len(frames), spec)
    preprocess_into([f.image for f in frames], spec, batch)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = session.run(None, {session.get_inputs()[0].name: batch})[0]
    decoded = heads.decode("yolox", {"out": raw}, (416, 416))
    boxes, scores, class_ids, rows = nms.candidates(decoded.boxes, decoded.scores, decoded.class_ids, 0.01)
    expected = nms.batched_nms(boxes, scores, class_ids, rows, 0.45, 300)
    got = nms_gpu.batched_nms(*(cupy.asarray(a) for a in (boxes, scores, class_ids, rows)), 0.45, 300)
    report("nms_real_yolox", candidates=int(len(scores)), kept=int(len(expected)))
    np.testing.assert_array_equal(got.get(), expected)
