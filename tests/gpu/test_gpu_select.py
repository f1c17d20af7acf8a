"""The fused post-engine kernel keeps exactly what the general GPU path keeps (itself equal to the numpy
reference), for every head layout, and hands over to it when an image has too many candidates."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, select_gpu
from pipeline.detect.detector_gpu import select_general

INPUT = (416, 416)


def _boxes_cxcywh(rng, rows: int, points: int) -> np.ndarray:
    """(rows, points, 4) centres and sizes with clusters of near-duplicates, the cases NMS exists for."""
    cxcy = rng.uniform(0, 416, (rows, points, 2))
    wh = rng.uniform(4, 120, (rows, points, 2))
    twins = rng.integers(0, points, (rows, points // 3))
    for r in range(rows):
        cxcy[r, twins[r, 1:]] = cxcy[r, twins[r, :-1]] + rng.normal(0, 3, (twins.shape[1] - 1, 2))
        wh[r, twins[r, 1:]] = wh[r, twins[r, :-1]] * rng.uniform(0.9, 1.1, (twins.shape[1] - 1, 2))
    return np.concatenate([cxcy, wh], -1).astype(np.float32)


def _class_scores(rng, rows: int, points: int, classes: int) -> np.ndarray:
    """(rows, points, classes) mostly low, a tenth of the points high, on a coarse grid (many exact ties)."""
    scores = rng.uniform(0, 0.2, (rows, points, classes))
    hot = rng.random((rows, points)) < 0.1
    scores[hot, rng.integers(0, classes, int(hot.sum()))] = rng.choice(np.linspace(0.3, 1, 15), int(hot.sum()))
    return scores.astype(np.float32)


def _outputs(head: str, rng, rows: int, classes: int = 6) -> dict:
    """Engine outputs (CuPy, by name) of one layout, `rows` images."""
    import cupy

    if head == "ultralytics":
        points = heads.grid_points(*INPUT)
        raw = np.concatenate([_boxes_cxcywh(rng, rows, points), _class_scores(rng, rows, points, classes)], -1)
        return {"output0": cupy.asarray(raw.transpose(0, 2, 1).copy())}
    if head in ("yolov5", "yolox"):
        points = heads.grid_points(*INPUT) * (3 if head == "yolov5" else 1)
        boxes = _boxes_cxcywh(rng, rows, points)
        if head == "yolox":  # raw offsets around the cell and log sizes, as the model emits them
            boxes = np.concatenate([rng.uniform(-0.5, 1.5, (rows, points, 2)), np.log(boxes[..., 2:] / 16)], -1)
        objectness = rng.choice(np.linspace(0.2, 1, 9), (rows, points, 1))
        raw = np.concatenate([boxes, objectness, _class_scores(rng, rows, points, classes)], -1)
        return {"output": cupy.asarray(raw.astype(np.float32))}
    if head == "end2end":
        xy = rng.uniform(0, 380, (rows, 300, 2))
        score = rng.choice(np.linspace(0, 1, 21), (rows, 300, 1))
        cls = rng.integers(0, classes, (rows, 300, 1))
        raw = np.concatenate([xy, xy + rng.uniform(2, 40, (rows, 300, 2)), score, cls], -1)
        return {"output0": cupy.asarray(raw.astype(np.float32))}
    if head == "rtdetr":  # Ultralytics RT-DETR: centre and size as fractions of the input
        centre, size = rng.uniform(0.05, 0.95, (rows, 300, 2)), rng.uniform(0.01, 0.3, (rows, 300, 2))
        score = rng.choice(np.linspace(0, 1, 21), (rows, 300, 1))
        cls = rng.integers(0, classes, (rows, 300, 1))
        return {"output0": cupy.asarray(np.concatenate([centre, size, score, cls], -1).astype(np.float32))}
    xy = rng.uniform(0, 1800, (rows, 300, 2))  # DETR: source pixels, int64 labels
    return {
        "labels": cupy.asarray(rng.integers(0, classes, (rows, 300))),
        "boxes": cupy.asarray(np.concatenate([xy, xy + rng.uniform(2, 300, (rows, 300, 2))], -1).astype(np.float32)),
        "scores": cupy.asarray(rng.choice(np.linspace(0, 1, 21), (rows, 300)).astype(np.float32)),
    }


def _table(rng, rows: int):
    """(rows, 6) source w, h, scale x, y, pad x, y of letterboxed 1920x1080 / 1280x720 / 640x480 frames."""
    import cupy

    sizes = np.asarray([(1920, 1080), (1280, 720), (640, 480)], np.float32)[rng.integers(0, 3, rows)]
    scale = (416 / sizes.max(1))[:, None].repeat(2, 1)
    pad = (416 - sizes * scale) / 2
    return cupy.asarray(np.concatenate([sizes, scale, pad], 1).astype(np.float32))


@pytest.fixture
def stream():
    """A non-blocking stream, current for the whole test (like the engine's), so every array the test
    makes is ordered with the kernels it feeds."""
    import cupy

    on = cupy.cuda.Stream(non_blocking=True)
    with on:
        yield on


def _config(**kw) -> DetectorConfig:
    return DetectorConfig(model=Path("unused.onnx"), **kw)


def _assert_same(got, expected):
    assert got is not None
    np.testing.assert_array_equal(got.frame_idx, expected.frame_idx)
    np.testing.assert_array_equal(got.class_id, expected.class_id)
    np.testing.assert_array_equal(got.score, expected.score)
    np.testing.assert_array_equal(got.xyxy, expected.xyxy)


@pytest.mark.parametrize("head", heads.HEADS)
@pytest.mark.parametrize("conf,iou,cap,class_filter", [(0.25, 0.45, 300, None), (0.5, 0.7, 5, [1, 4]), (0.3, 0.3, 40, [0])])
def test_fused_kernel_keeps_what_the_general_path_keeps(head, conf, iou, cap, class_filter, stream, report):
    rng = np.random.default_rng(len(head) * 7 + int(conf * 10))
    rows, n = 8, 6  # the last two rows pad the batch and must be ignored
    outputs, table = _outputs(head, rng, rows), _table(rng, rows)
    config = _config(conf_threshold=conf, iou_threshold=iou, max_detections=cap)
    allowed = None if class_filter is None else np.asarray(class_filter)
    got = select_gpu.FusedSelect(head, INPUT, config, allowed)(outputs, table, n, stream)
    expected = select_general(heads.decode(head, outputs, INPUT), table, n, config, allowed)
    report("fused_select", head=head, conf=conf, kept=len(expected.score))
    assert len(expected.score) > n  # the case is not trivial
    _assert_same(got, expected)


@pytest.mark.parametrize("head", ["ultralytics", "yolov5", "yolox", "end2end"])
def test_fp16_outputs_are_read_as_they_are_and_kept_as_their_float32_widening_is(head, stream):
    """An FP16 engine's outputs go to the kernel without a cast: the detections equal those of the same
    values widened to float32 first (every half widens exactly)."""
    rng = np.random.default_rng(len(head) * 13)
    half = {name: v.astype(np.float16) for name, v in _outputs(head, rng, 6).items()}
    table = _table(rng, 6)
    got = select_gpu.FusedSelect(head, INPUT, _config(conf_threshold=0.25), None)(half, table, 6, stream)
    widened = {name: v.astype(np.float32) for name, v in half.items()}  # a selector of its own: no buffer shared
    expected = select_gpu.FusedSelect(head, INPUT, _config(conf_threshold=0.25), None)(widened, table, 6, stream)
    assert len(expected.score) > 6
    _assert_same(got, expected)


def test_an_image_with_more_candidates_than_the_kernel_holds_goes_to_the_general_path(stream):
    import cupy

    rng = np.random.default_rng(3)
    outputs = _outputs("ultralytics", rng, 2)  # 3,549 points, every one above a threshold of 0
    outputs = {"output0": cupy.concatenate([outputs["output0"]] * 2, axis=2)}  # 7,098 > CAPACITY
    select = select_gpu.FusedSelect("ultralytics", INPUT, _config(conf_threshold=0.0), None)
    assert select(outputs, _table(rng, 2), 2, stream) is None
    # the same kernel with a normal threshold handles the same outputs
    select = select_gpu.FusedSelect("ultralytics", INPUT, _config(conf_threshold=0.25), None)
    assert len(select(outputs, _table(rng, 2), 2, stream).score) > 0


def test_batches_queued_one_after_another_on_one_select_are_each_its_own(stream):
    """Four launches queued before any is collected: the second overflows in one image, the third has as many
    rows (the same scratch, so each image's tally must have been zeroed after the overflow too), the fourth more
    rows than any before. Every batch but the overflowing one equals the general path (nothing of one batch's
    candidates or counts is left for the next); the overflowing one asks for the general path."""
    rng = np.random.default_rng(5)
    config = _config(conf_threshold=0.25, iou_threshold=0.45, max_detections=300, max_candidates=1000)
    select = select_gpu.FusedSelect("ultralytics", INPUT, config, None)
    rows = (4, 4, 4, 8)
    batches = [_outputs("ultralytics", rng, r) for r in rows]
    batches[1]["output0"][1, 4, :] = 0.9  # all 3,549 anchors of image 1 are candidates: over 1,000
    tables = [_table(rng, r) for r in rows]
    queued = [select.launch(outputs, table, len(table), stream) for outputs, table in zip(batches, tables)]
    found = [select.collect(q) for q in queued]
    assert found[1] is None
    for got, outputs, table in zip(found[::2] + found[3:], batches[::2] + batches[3:], tables[::2] + tables[3:]):
        expected = select_general(heads.decode("ultralytics", outputs, INPUT), table, len(table), config, None)
        assert len(expected.score) > len(table)
        _assert_same(got, expected)


def test_a_label_outside_the_kernels_class_range_goes_to_the_general_path(stream):
    rng = np.random.default_rng(4)
    outputs = _outputs("detr", rng, 2)
    outputs["labels"][1, 0] = 5000
    outputs["scores"][1, 0] = 0.9
    select = select_gpu.FusedSelect("detr", INPUT, _config(), None)
    assert select(outputs, _table(rng, 2), 2, stream) is None
    # the same selector on the next batch: nothing of the refused one is left in its counts
    clean, table = _outputs("detr", rng, 2), _table(rng, 2)
    expected = select_general(heads.decode("detr", clean, INPUT), table, 2, _config(), None)
    assert len(expected.score) > 2
    _assert_same(select(clean, table, 2, stream), expected)


FAULTS = ("nan box", "inf box", "score above 1", "inf score", "nan score", "class without a name", "nan class")
NUM_CLASSES = 6


def _plant(head: str, host: dict, b: int, i: int, fault: str) -> None:
    """Make anchor i of image b (host outputs, in place) a candidate of class 2 at 0.9, then break it: `fault`.
    Heads whose class is an argmax cannot give a class without a name; they get a finite candidate there."""
    nan, inf = np.nan, np.inf
    if head == "ultralytics":  # (B, 4 + nc, N)
        raw = host["output0"]
        raw[b, 4:, i], raw[b, 6, i] = 0.1, 0.9
        at = {"nan box": (0, nan), "inf box": (2, inf), "score above 1": (6, 3.5), "inf score": (6, inf),
              "nan score": (5, nan)}.get(fault)
        if at:
            raw[b, at[0], i] = at[1]
    elif head in ("yolov5", "yolox"):  # (B, N, 5 + nc); a YOLOX log size of 200 overflows exp to inf
        raw = host["output"]
        raw[b, i, 4], raw[b, i, 5:], raw[b, i, 7] = 1.0, 0.1, 0.9
        at = {"nan box": (0, nan), "inf box": (2, inf if head == "yolov5" else 200.0), "score above 1": (4, 3.5),
              "inf score": (7, inf), "nan score": (6, nan)}.get(fault)
        if at:
            raw[b, i, at[0]] = at[1]
    elif head in ("end2end", "rtdetr"):  # (B, K, 6): box, score, class
        raw = host["output0"]
        raw[b, i, 4:6] = 0.9, 2
        column, value = {"nan box": (0, nan), "inf box": (2, inf), "score above 1": (4, 3.5), "inf score": (4, inf),
                         "nan score": (4, nan), "class without a name": (5, 99), "nan class": (5, nan)}[fault]
        raw[b, i, column] = value
    else:  # DETR: labels (B, K) int64, boxes (B, K, 4), scores (B, K)
        host["scores"][b, i], host["labels"][b, i] = 0.9, 2
        if fault in ("nan box", "inf box"):
            host["boxes"][b, i, 0 if fault == "nan box" else 2] = nan if fault == "nan box" else inf
        elif fault in ("score above 1", "inf score", "nan score"):
            host["scores"][b, i] = {"score above 1": 3.5, "inf score": inf, "nan score": nan}[fault]
        else:  # a label of no name, and one beyond int32 (not wrapped into a name)
            host["labels"][b, i] = 99 if fault == "class without a name" else 2**40 + 2


@pytest.mark.parametrize("head", heads.HEADS)
def test_candidates_a_broken_model_gives_are_dropped_and_reported_as_on_the_host(head, stream, report):
    """NaN and inf boxes, scores above 1 (inf too), NaN scores and classes without a name, planted in three
    images and in a padding row: the fused kernel and the general path drop them, keep every finite candidate
    the host path keeps (the same detections), and report the same counts and examples as the host path."""
    import cupy

    from pipeline.detect.detector import postprocess

    rng = np.random.default_rng(len(head) * 11)
    rows, n = 8, 6
    outputs, table = _outputs(head, rng, rows), _table(rng, rows)
    host = {k: v.get() for k, v in outputs.items()}
    # Heads of thousands of anchors are scored by blocks of 512: each fault then sits in a block of its own, the
    # later faults in the lower blocks, so the example of a kind (its lowest anchor) comes from the last of them.
    spread = 520 if head in ("ultralytics", "yolov5", "yolox") else 0
    for b in (0, 2, 5, 7):  # 7 pads the batch: its candidates are neither kept nor reported
        for k, fault in enumerate(FAULTS):
            _plant(head, host, b, 40 + 9 * k + b + spread * (len(FAULTS) - 1 - k), fault)
    outputs = {k: cupy.asarray(v) for k, v in host.items()}
    config = _config(conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    told = {"fused": [], "general": [], "host": []}
    fused = select_gpu.FusedSelect(head, INPUT, config, None, NUM_CLASSES, lambda *r: told["fused"].append(r))
    got = fused(outputs, table, n, stream)
    general = select_general(heads.decode(head, outputs, INPUT), table, n, config, None, NUM_CLASSES,
                             lambda *r: told["general"].append(r))
    t = table.get()[:n]
    expected = postprocess(heads.decode(head, {k: v[:n] for k, v in host.items()}, INPUT, config.conf_threshold),
                           t[:, 0:2], t[:, 2:4], t[:, 4:6], config, None, NUM_CLASSES, lambda *r: told["host"].append(r))
    report("broken_candidates", head=head, kept=len(expected.score), dropped=[(w, c) for w, c, _ in told["host"]])

    names = head in ("end2end", "rtdetr", "detr")  # heads whose class is the model's, not an argmax
    assert [(what, count) for what, count, _ in told["host"]] == [
        ("boxes that are not finite", 6), ("scores above 1", 6)] + [("class ids without a name", 6)] * names
    assert len(expected.score) > n and np.isfinite(expected.xyxy).all() and (expected.score <= 1).all()
    _assert_same(got, general)
    if head == "yolox":  # exp differs by an ulp between numpy and CUDA: boxes equal to float32 rounding
        np.testing.assert_array_equal(general.class_id, expected.class_id)
        np.testing.assert_allclose(general.xyxy, expected.xyxy, rtol=1e-5, atol=1e-3)
    else:
        _assert_same(general, expected)
    for path in ("fused", "general"):
        assert [(w, c) for w, c, _ in told[path]] == [(w, c) for w, c, _ in told["host"]], path
        for (_, _, example), (_, _, reference) in zip(told[path], told["host"]):
            np.testing.assert_allclose(np.asarray(example, np.float64), np.asarray(reference, np.float64),
                                       rtol=1e-5 if head == "yolox" else 0)
