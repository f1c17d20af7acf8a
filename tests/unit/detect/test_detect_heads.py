"""Head detection from ONNX signatures and the adapters of each output layout."""
import numpy as np
import pytest

from pipeline.detect import heads
from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.detect.recognize import detect_head
from pipeline.errors import ConfigError


def _sig(in_shape, *outs, in_names=("images",)):
    inputs = tuple(TensorInfo(n, in_shape if i == 0 else ("N", 2)) for i, n in enumerate(in_names))
    return ModelSignature(inputs, tuple(TensorInfo(n, s) for n, s in outs))


@pytest.mark.parametrize(
    "signature, head",
    [
        (_sig((1, 3, 320, 320), ("output0", (1, 84, 2100))), "ultralytics"),
        (_sig(("batch", 3, 640, 640), ("output0", ("batch", 84, 8400))), "ultralytics"),
        (_sig((1, 3, 416, 416), ("output", (1, 3549, 85))), "yolox"),
        (_sig((1, 3, 640, 640), ("output0", (1, 25200, 85))), "yolov5"),
        (_sig((1, 3, 640, 640), ("output0", (1, 300, 6))), "end2end"),
        (
            _sig(("N", 3, 320, 320), ("labels", ("N", 300)), ("boxes", ("N", 300, 4)), ("scores", ("N", 300)),
                 in_names=("images", "orig_target_sizes")),
            "detr",
        ),
    ],
)  # fmt: skip
def test_head_is_read_from_the_onnx_signature(signature, head):
    assert detect_head(signature) == head


def test_yaml_head_override_wins_over_the_signature():
    assert detect_head(_sig((1, 3, 416, 416), ("output", (1, 3549, 85))), override="yolov5") == "yolov5"


def test_unknown_layout_asks_for_detector_head():
    with pytest.raises(ConfigError, match="set detector.head"):
        detect_head(_sig((1, 3, 64, 64), ("a", (1, 10)), ("b", (1, 10))))


def _class_scores(n, nc, hot):
    scores = np.full((n, nc), 0.01, np.float32)
    for row, (cls, value) in hot.items():
        scores[row, cls] = value
    return scores


def test_ultralytics_adapter_converts_centres_and_takes_the_best_class():
    raw = np.zeros((1, 4 + 3, 2), np.float32)
    raw[0, :4, 0] = [50, 60, 20, 10]
    raw[0, :4, 1] = [10, 10, 4, 4]
    raw[0, 4:, :] = _class_scores(2, 3, {0: (2, 0.9), 1: (0, 0.4)}).T
    out = heads.decode_ultralytics(raw)
    assert out.boxes[0].tolist() == [[40, 55, 60, 65], [8, 8, 12, 12]]
    assert out.class_ids[0].tolist() == [2, 0]
    np.testing.assert_allclose(out.scores[0], [0.9, 0.4])
    assert out.needs_nms and not out.in_source


def test_yolov5_adapter_multiplies_objectness_by_class_score():
    raw = np.zeros((1, 2, 5 + 2), np.float32)
    raw[0, 0] = [50, 60, 20, 10, 0.5, 0.2, 0.8]
    raw[0, 1] = [10, 10, 4, 4, 1.0, 0.6, 0.1]
    out = heads.decode_yolov5(raw)
    assert out.boxes[0, 0].tolist() == [40, 55, 60, 65]
    assert out.class_ids[0].tolist() == [1, 0]
    np.testing.assert_allclose(out.scores[0], [0.4, 0.6], rtol=1e-6)


def test_yolox_adapter_decodes_grid_offsets_and_strides():
    n = heads.grid_points(64, 32)  # 8x4 + 4x2 + 2x1 = 42
    raw = np.zeros((1, n, 5 + 1), np.float32)
    raw[..., 4:] = 1.0
    out = heads.decode_yolox(raw, (64, 32))
    # point 9 is stride 8, row 1, column 1: centre (1 * 8, 1 * 8), size exp(0) * 8
    assert out.boxes[0, 9].tolist() == [4, 4, 12, 12]
    # the first stride-16 point is at (0, 0) with size 16, the last stride-32 point at column 1
    assert out.boxes[0, 32].tolist() == [-8, -8, 8, 8]
    assert out.boxes[0, n - 1].tolist() == [32 - 16, -16, 32 + 16, 16]


def test_yolox_adapter_rejects_an_input_size_that_does_not_match_the_points():
    with pytest.raises(ConfigError, match="input_size"):
        heads.decode_yolox(np.zeros((1, 10, 6), np.float32), (64, 64))


def test_end2end_adapter_passes_final_boxes_without_nms():
    raw = np.asarray([[[1, 2, 3, 4, 0.9, 7], [5, 6, 7, 8, 0.1, 2]]], np.float32)
    out = heads.decode_end2end(raw)
    assert out.boxes[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert out.class_ids.dtype == np.int32 and out.class_ids[0].tolist() == [7, 2]
    assert not out.needs_nms


def test_detr_adapter_marks_boxes_as_source_pixels():
    out = heads.decode(
        "detr",
        {"labels": np.asarray([[3]]), "boxes": np.asarray([[[10, 20, 30, 40]]], np.float32), "scores": np.asarray([[0.7]], np.float32)},
        (320, 320),
    )
    assert out.in_source and not out.needs_nms
    assert out.class_ids.tolist() == [[3]] and out.boxes.tolist() == [[[10, 20, 30, 40]]]


@pytest.mark.parametrize("head, resize, color", [("yolox", "letterbox", "bgr"), ("detr", "stretch", "rgb"), ("ultralytics", "letterbox", "rgb")])
def test_each_head_brings_its_training_preprocessing(head, resize, color):
    defaults = heads.preprocess_defaults(head)
    assert (defaults["resize"], defaults["color"]) == (resize, color)


def test_a_six_column_output_of_unknown_length_is_not_guessed_as_end_to_end():
    """A one-class YOLOv5 [B, N, 6] with a dynamic input looks like YOLOv10's [B, 300, 6]: ask, don't guess."""
    with pytest.raises(ConfigError, match="set detector.head"):
        detect_head(_sig(("b", 3, "h", "w"), ("output0", ("b", "n", 6))))
    assert detect_head(_sig(("b", 3, "h", "w"), ("output0", ("b", 300, 6)))) == "end2end"
