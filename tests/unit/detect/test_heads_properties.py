"""Properties of the head adapters and what follows them on the host (confidence filter, NMS, source pixels):
for raw outputs of every layout, with the values a broken or mismatched model gives (nan, inf, huge boxes,
class columns that are not classes), decoding never raises, every detection is a finite box inside its
image with a score in [0, 1] and a class that has a name, and a box planted in the raw output as the best
of its image comes out where it was planted. And reading any signature gives a head or a ConfigError."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads
from pipeline.detect.detector import postprocess
from pipeline.detect.preprocess import PreprocessSpec, placement
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError

pytestmark = pytest.mark.fault

PROPERTY = settings(max_examples=200, deadline=None)
PLANTED_SCORE = 0.95
OTHERS_MAX = 0.9
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -0.0, 1e-30, 88.8, 100.0])


@st.composite
def cases(draw):
    head = draw(st.sampled_from(heads.HEADS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    input_wh = draw(st.sampled_from([(64, 64), (96, 64), (64, 32)]))
    batch, nc = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    n = heads.grid_points(*input_wh) if head == "yolox" else draw(st.integers(1, 60))
    sizes = np.array([[draw(st.integers(8, 2000)), draw(st.integers(8, 2000))] for _ in range(batch)], np.int64)
    planted = []  # per image: (anchor, class, source xyxy), at least 2 pixels wide and high
    for w, h in sizes:
        x1, y1 = draw(st.floats(0, 1)) * (w - 4), draw(st.floats(0, 1)) * (h - 4)
        x2, y2 = x1 + 2 + draw(st.floats(0, 1)) * (w - 4 - x1), y1 + 2 + draw(st.floats(0, 1)) * (h - 4 - y1)
        planted.append((draw(st.integers(0, n - 1)), draw(st.integers(0, nc - 1)), np.array([x1, y1, x2, y2])))
    specials = draw(st.lists(st.tuples(st.integers(0, batch - 1), st.integers(0, n - 1), st.integers(0, 9), SPECIAL),
                             max_size=12))
    config = DetectorConfig.model_construct(conf_threshold=draw(st.floats(0.05, 0.5)), iou_threshold=0.45,
                                            max_detections=draw(st.integers(1, 50)))
    return head, rng, input_wh, nc, sizes, planted, specials, config


def model_place(head, input_wh, size):
    """scale (2,), pad (2,) of the preprocessing the head's family uses, for a source of `size`."""
    defaults = heads.preprocess_defaults(head)
    spec = PreprocessSpec(*input_wh, resize=defaults["resize"], align=defaults["align"])
    p = placement(int(size[0]), int(size[1]), spec)
    return np.array([p.sx, p.sy], np.float32), np.array([p.px, p.py], np.float32)


def raw_outputs(head, rng, input_wh, nc, sizes, planted, specials):
    """The engine outputs of one batch (by name) and (scale, pad) per row: random boxes and scores below
    OTHERS_MAX everywhere, one planted box per image scored PLANTED_SCORE, and the special values in the
    boxes, scores and class columns of rows other than the planted ones."""
    batch, n = len(sizes), (heads.grid_points(*input_wh) if head == "yolox" else None)
    n = n or max(p[0] for p in planted) + 1 + rng.integers(0, 20)
    places = [model_place(head, input_wh, s) for s in sizes]
    boxes = rng.uniform(-200, 300, (batch, n, 4)).astype(np.float32)  # cx, cy, w, h in input pixels
    scores = rng.uniform(0, OTHERS_MAX, (batch, n, nc)).astype(np.float32)
    objectness = rng.uniform(0, 1, (batch, n)).astype(np.float32)
    classes = scores.argmax(axis=-1).astype(np.float32)
    for b, (anchor, cls, xyxy) in enumerate(planted):
        scale, pad = places[b]
        x1, y1, x2, y2 = xyxy * np.tile(scale, 2) + np.tile(pad, 2)
        boxes[b, anchor] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        scores[b, anchor, cls], objectness[b, anchor], classes[b, anchor] = PLANTED_SCORE, 1.0, cls
    planted_rows = {(b, p[0]) for b, p in enumerate(planted)}
    for b, anchor, channel, value in specials:
        if (b, anchor % n) in planted_rows:
            continue
        if channel < 4:
            boxes[b, anchor % n, channel] = value
        elif channel < 8:
            scores[b, anchor % n, channel % nc] = value
        else:
            classes[b, anchor % n] = value
    if head == "ultralytics":
        raw = np.concatenate([boxes, scores], axis=-1).transpose(0, 2, 1)
    elif head == "yolov5":
        raw = np.concatenate([boxes, objectness[..., None], scores], axis=-1)
    elif head == "yolox":
        grid, stride = heads.yolox_grid(*input_wh)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            raw = np.concatenate([boxes[..., :2] / stride - grid, np.log(boxes[..., 2:] / stride),
                                  objectness[..., None], scores], axis=-1)
    elif head == "rtdetr":
        norm = boxes / np.array([*input_wh, *input_wh], np.float32)
        raw = np.concatenate([norm, scores.max(-1, keepdims=True), classes[..., None]], axis=-1)
    elif head == "end2end":
        raw = np.concatenate([heads.cxcywh_to_xyxy(boxes), scores.max(-1, keepdims=True), classes[..., None]], axis=-1)
    else:  # DETR: corners in source pixels, integer labels (here -7 or 99 where a special value went)
        with np.errstate(over="ignore", invalid="ignore"):
            corners = np.stack([(heads.cxcywh_to_xyxy(boxes[b]) - np.tile(p[1], 2)) / np.tile(p[0], 2)
                                for b, p in enumerate(places)])
        labels = np.where(np.isfinite(classes) & (np.abs(classes) < 50), classes, 99).astype(np.int64)
        labels[classes < 0] = -7
        return {"labels": labels, "boxes": corners, "scores": scores.max(-1)}, places
    return {"output0": np.ascontiguousarray(raw, np.float32)}, places


@PROPERTY
@given(case=cases())
def test_any_raw_output_decodes_to_boxes_inside_the_image_and_the_planted_box_comes_out(case):
    head, rng, input_wh, nc, sizes, planted, specials, config = case
    outputs, places = raw_outputs(head, rng, input_wh, nc, sizes, planted, specials)
    scale, pad = np.stack([p[0] for p in places]), np.stack([p[1] for p in places])
    decoded = heads.decode(head, outputs, input_wh, config.conf_threshold)
    found = postprocess(decoded, sizes, scale, pad, config, num_classes=nc)
    assert np.isfinite(found.xyxy).all() and np.isfinite(found.score).all()
    limits = sizes[found.frame_idx]
    assert (found.xyxy >= 0).all()
    assert (found.xyxy[:, 0::2] <= limits[:, :1]).all() and (found.xyxy[:, 1::2] <= limits[:, 1:]).all()
    assert ((found.score >= config.conf_threshold) & (found.score <= 1)).all()
    assert ((found.class_id >= 0) & (found.class_id < nc)).all()
    assert np.bincount(found.frame_idx, minlength=len(sizes)).max(initial=0) <= config.max_detections
    for b, (_, cls, xyxy) in enumerate(planted):
        mine = (found.frame_idx == b) & (found.class_id == cls) & (found.score == np.float32(PLANTED_SCORE))
        assert mine.sum() == 1, (head, b, found.xyxy[found.frame_idx == b], xyxy)
        np.testing.assert_allclose(found.xyxy[mine][0], xyxy, atol=0.05, rtol=1e-4)


@st.composite
def signatures(draw):
    dims = st.one_of(st.integers(0, 9000), st.sampled_from(["batch", "anchors", None, "N"]))
    shape = st.lists(dims, min_size=0, max_size=4).map(tuple)
    names = st.sampled_from(["output0", "output", "labels", "boxes", "scores", "x"])
    inputs = draw(st.lists(st.tuples(st.sampled_from(["images", "orig_target_sizes"]), shape), min_size=1, max_size=2))
    outputs = draw(st.lists(st.tuples(names, shape), min_size=1, max_size=3))
    metadata = draw(st.dictionaries(
        st.sampled_from(["task", "imgsz", "names", "end2end", "head", "stride"]),
        st.one_of(st.text(max_size=12), st.sampled_from(["detect", "segment", "[640, 640]", "320", "[0, 5]", "True",
                                                         "{0: 'a', 1: 'b'}", "['a']", "RTDETRDecoder", "{}"])),
        max_size=5))
    override = draw(st.sampled_from(["auto", "auto", *heads.HEADS, "yolov99"]))
    return (heads.ModelSignature(tuple(heads.TensorInfo(n, s) for n, s in inputs),
                                 tuple(heads.TensorInfo(n, s) for n, s in outputs)), metadata, override)


@settings(max_examples=300, deadline=None)
@given(case=signatures(), configured=st.one_of(st.none(), st.tuples(st.integers(32, 1280), st.integers(32, 1280))))
def test_any_signature_gives_a_head_and_an_input_size_or_a_config_error(case, configured):
    signature, metadata, override = case
    try:
        head = detect_head(signature, metadata, override)
    except ConfigError as exc:
        assert str(exc)
        return
    assert head in heads.HEADS
    config = DetectorConfig.model_construct(model="m.onnx", input_size=configured)
    try:
        width, height = input_size(signature, config, metadata)
    except ConfigError as exc:
        assert "m.onnx" in str(exc) or "input" in str(exc)
        return
    assert isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0


def test_dropped_candidates_are_reported_with_what_was_wrong():
    raw = np.array([[[10, 10, 20, 20, 0.9, 7], [np.nan, 0, 5, 5, 0.8, 0], [0, 0, 5, 5, 3.5, 1], [1, 1, 9, 9, 0.7, 2]]],
                   np.float32)  # class 7 of 3, a nan box, a logit for a score, and one good row
    reports = []
    found = postprocess(heads.decode("end2end", {"o": raw}, (64, 64)), np.array([[64, 64]]),
                        np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32), DetectorConfig.model_construct(),
                        num_classes=3, report=lambda *r: reports.append(r))
    assert found.class_id.tolist() == [2] and found.xyxy.tolist() == [[1, 1, 9, 9]]
    assert sorted((what, count) for what, count, _ in reports) == [
        ("boxes that are not finite", 1), ("class ids without a name", 1), ("scores above 1", 1)]
    examples = {what: example for what, _, example in reports}
    assert examples["class ids without a name"] == 7 and examples["scores above 1"] == 3.5
    assert np.isnan(examples["boxes that are not finite"][0])
