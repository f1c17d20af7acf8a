"""Recognising a model from its file: Ultralytics metadata, symbolic output shapes, detection only.

The signatures and metadata below are what Ultralytics 8.4 writes for `model.export(format="onnx",
dynamic=True)` (the exports themselves are made and run in tests/integration/detect/test_detect_exports.py).
"""
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads
from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.detect import names
from pipeline.detect.recognize import class_names, detect_head, export_info, input_size
from pipeline.errors import ConfigError

DYNAMIC_IN = ("batch", 3, "height", "width")
DYNAMIC_OUT = ("batch", "Concatoutput0_dim_1", "anchors")  # every output dim symbolic, end-to-end and RT-DETR too
NAMES_80 = "{" + ", ".join(f"{i}: '{i}'" for i in range(80)) + "}"


def _sig(in_shape, *outs):
    return ModelSignature((TensorInfo("images", in_shape),), tuple(TensorInfo(n, s) for n, s in outs))


def _meta(task="detect", head="Detect", end2end="False", imgsz="[320, 320]", names=NAMES_80, **extra):
    return {"description": "Ultralytics model", "author": "Ultralytics", "stride": "32", "task": task, "head": head,
            "batch": "1", "imgsz": imgsz, "names": names, "channels": "3", "end2end": end2end, **extra}  # fmt: skip


@pytest.mark.parametrize(
    "metadata, head",
    [
        (_meta(), "ultralytics"),  # YOLOv8n / YOLO11n / YOLO26n, and YOLOv10n exported with NMS outside
        (_meta(head="v10Detect", end2end="True"), "end2end"),  # YOLOv10n, nms=False
        (_meta(end2end="True"), "end2end"),  # YOLO26n, nms=False
        (_meta(head="RTDETRDecoder"), "rtdetr"),
        # YOLOv8n / YOLO11n exported with nms=True: [B, 300, 6] final boxes, said only in the export's args
        (_meta(args="{'batch': 1, 'nms': True, 'dynamic': True}"), "end2end"),
    ],
)
def test_a_dynamic_ultralytics_export_is_recognised_from_its_metadata(metadata, head):
    assert detect_head(_sig(DYNAMIC_IN, ("output0", DYNAMIC_OUT)), metadata) == head


def test_the_reported_dynamic_yolo11n_export_is_recognised_even_without_metadata():
    """The file of the report: output0['batch', 84, 'anchors'] and a dynamic input."""
    assert detect_head(_sig(DYNAMIC_IN, ("output0", ("batch", 84, "anchors"))), {}) == "ultralytics"


def test_a_yolov5_export_with_symbolic_anchors_is_told_by_its_names():
    """YOLOv5's own export writes `stride` and `names` only and marks batch and anchors dynamic."""
    metadata = {"stride": "32", "names": NAMES_80}
    assert detect_head(_sig(("batch", 3, 640, 640), ("output0", ("batch", "anchors", 85))), metadata) == "yolov5"


@pytest.mark.parametrize("task", ["segment", "pose", "obb", "classify"])
def test_segment_pose_and_obb_exports_are_refused_as_detection_only(task):
    with pytest.raises(ConfigError, match=f"'{task}' export .* detection models only"):
        detect_head(_sig(DYNAMIC_IN, ("output0", DYNAMIC_OUT)), _meta(task=task))


def test_a_segment_export_without_metadata_is_refused_for_its_extra_output():
    signature = _sig(DYNAMIC_IN, ("output0", ("batch", 116, "anchors")), ("output1", ("batch", 32, "mh", "mw")))
    with pytest.raises(ConfigError, match="2 outputs .* detection models only"):
        detect_head(signature, {})


def test_a_pose_export_whose_task_was_lost_is_refused_by_its_channel_count():
    """YOLO11n-pose: 4 box + 1 class + 17 x 3 keypoint channels; the names say one class."""
    with pytest.raises(ConfigError, match="56 channels, not 4 \\+ 1 classes .* detection models only"):
        detect_head(_sig((1, 3, 320, 320), ("output0", (1, 56, 2100))), _meta(names="{0: 'person'}"))


def test_metadata_is_read_as_ultralytics_writes_it():
    info = export_info(_meta(imgsz="[384, 640]", end2end="True", head="v10Detect"))
    assert (info.task, info.input_wh, info.end2end, info.head_module, info.classes) == ("detect", (640, 384), True,
                                                                                       "v10Detect", 80)  # fmt: skip
    assert export_info({"imgsz": "640"}).input_wh == (640, 640)
    assert export_info({"imgsz": "not a size"}).input_wh is None


def _config(tmp_path: Path, **keys) -> DetectorConfig:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    return DetectorConfig(model=model, **keys)


def test_a_dynamic_input_takes_its_size_from_the_config_then_the_metadata(tmp_path):
    signature = _sig(DYNAMIC_IN, ("output0", DYNAMIC_OUT))
    metadata = _meta(imgsz="[384, 640]")
    assert input_size(signature, _config(tmp_path), metadata) == (640, 384)
    assert input_size(signature, _config(tmp_path, input_size=(320, 320)), metadata) == (320, 320)
    with pytest.raises(ConfigError, match="no `imgsz` in its metadata; set detector.input_size"):
        input_size(signature, _config(tmp_path), {})


def test_a_static_export_with_nms_inside_is_recognised_not_refused_for_its_channels():
    metadata = _meta(args="{'batch': 1, 'nms': True, 'dynamic': False}")
    assert detect_head(_sig((1, 3, 320, 320), ("output0", (1, 300, 6))), metadata) == "end2end"


@pytest.mark.parametrize("images, said", [
    (TensorInfo("images", (1, 256, 416, 3)), r"takes \[1, 256, 416, 3\], channels last"),
    # a grayscale model (Ultralytics trains them with `channels: 1`): not told to put its channels first
    (TensorInfo("images", (1, 1, 256, 416)), r"takes \[1, 1, 256, 416\], one channel \(grayscale\).* 3-channel"),
    (TensorInfo("images", (1, 256, 416, 1)), r"takes \[1, 256, 416, 1\], one channel \(grayscale\).* 3-channel"),
    (TensorInfo("images", (1, 3, 256, 416), "tensor(uint8)"), r"takes tensor\(uint8\) input; .* float32 \(or float16\)"),
])
def test_an_input_streamweave_cannot_feed_is_refused_at_load_naming_the_file(tmp_path, images, said):
    """Accepted before, they failed every batch."""
    signature = ModelSignature((images,), (TensorInfo("output0", (1, 84, 2184)),))
    with pytest.raises(ConfigError, match=rf"model '.*m\.onnx' {said}"):
        input_size(signature, _config(tmp_path), _meta())


def test_rtdetr_boxes_are_fractions_of_the_input_and_need_no_nms():
    raw = np.asarray([[[0.5, 0.5, 0.25, 0.5, 0.9, 1], [0.1, 0.1, 0.1, 0.1, 0.3, 0]]], np.float32)  # [1, K=2, 6]
    decoded = heads.decode("rtdetr", {"output0": raw}, (640, 320))
    np.testing.assert_allclose(decoded.boxes[0, 0], [240, 80, 400, 240])  # centre of a 640x320 input, 160x160
    assert decoded.class_ids[0].tolist() == [1, 0]
    np.testing.assert_allclose(decoded.scores[0], [0.9, 0.3])
    assert not decoded.needs_nms and not decoded.in_source


def _yolox_file(path: Path, classes: int) -> Path:
    """A 32x32 YOLOX-layout model, [1, 21, 5 + classes], without metadata (as Megvii's exports come)."""
    from onnx import TensorProto, helper, numpy_helper, save

    zeros = numpy_helper.from_array(np.zeros((1, 21, 5 + classes), np.float32), "zeros")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=zeros)], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 21, 5 + classes])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("class_names, named_by", [(["forklift", "pallet"], "detector.class_names names 2"),
                                                   (None, "COCO-80 default names 80")])
def test_names_that_are_not_one_per_class_of_the_model_are_refused_at_load(tmp_path, class_names, named_by):
    """A 3-class model named by 2 names would drop every box of class 2; named by COCO-80 its classes would be
    called person, bicycle and car."""
    from pipeline.config.models import PipelineConfig
    from pipeline.detect.detector import Detector
    from pipeline.runtime import preflight

    detector = DetectorConfig(model=_yolox_file(tmp_path / "m.onnx", 3), engine="onnxruntime", class_names=class_names)
    with pytest.raises(ConfigError, match=f"output has 3 classes, and {named_by}"):
        Detector(detector)
    problems = preflight.check(PipelineConfig(detector=detector))
    assert [p.loc for p in problems] == [("detector", "class_names")] and named_by in problems[0].message
    named = detector.model_copy(update={"class_names": ["forklift", "pallet", "person"]})
    assert Detector(named).class_names[2] == "person" and preflight.check(PipelineConfig(detector=named)) == []


def test_a_dynamic_input_size_the_model_strides_do_not_divide_is_refused(tmp_path):
    signature = _sig(DYNAMIC_IN, ("output0", DYNAMIC_OUT))
    with pytest.raises(ConfigError, match=r"input_size \[640, 360\].*multiples of 32.*\[640, 384\]"):
        input_size(signature, _config(tmp_path, input_size=(640, 360)), _meta())
    with pytest.raises(ConfigError, match=r"multiples of 64.*\[704, 384\]"):
        input_size(signature, _config(tmp_path, input_size=(641, 384)), _meta(stride="64"))
    assert input_size(signature, _config(tmp_path, input_size=(640, 384)), {}) == (640, 384)


@pytest.mark.parametrize("class_names", [None, [f"c{i}" for i in range(80)]])
def test_an_ultralytics_output_transposed_to_anchors_first_is_named_not_read_as_a_yolox(tmp_path, class_names):
    """[1, 21, 84] at 32x32 (as [1, 8400, 84] at 640): one row per anchor point like YOLOX, but 4 + 80 columns.
    Before, the error said to name 79 classes, and a user who did got boxes decoded with a class read as objectness."""
    from pipeline.config.models import PipelineConfig
    from pipeline.detect.detector import Detector
    from pipeline.runtime import preflight

    detector = DetectorConfig(model=_yolox_file(tmp_path / "m.onnx", 79), engine="onnxruntime", class_names=class_names)
    said = r"output0\[1, 21, 84\] .* 4 \+ one per class \(.*: 80 names\): .* transposed .* \[batch, 4 \+ classes, anc"
    with pytest.raises(ConfigError, match=said):
        Detector(detector)
    problems = preflight.check(PipelineConfig(detector=detector))
    assert len(problems) == 1 and "transposed" in problems[0].message


def test_a_yolox_names_file_is_read_once_and_still_checked_against_the_class_count(tmp_path, monkeypatch):
    names_file = tmp_path / "names.txt"
    names_file.write_text("forklift\npallet\n")
    reads, read = [], names.names_from_config
    monkeypatch.setattr(names, "names_from_config", lambda configured: reads.append(configured) or read(configured))
    yolox = _sig((1, 3, 32, 32), ("output", (1, 21, 5 + 2)))
    assert class_names(yolox, "yolox", {}, names_file) == (["forklift", "pallet"], "detector.class_names")
    assert reads == [names_file]
    with pytest.raises(ConfigError, match="output has 3 classes, and detector.class_names names 2"):
        class_names(_sig((1, 3, 32, 32), ("output", (1, 21, 5 + 3))), "yolox", {}, names_file)


def test_a_transposed_ultralytics_export_with_its_metadata_is_named_not_called_a_pose_export():
    with pytest.raises(ConfigError, match=r"output0\[1, 21, 84\] .* transposed"):
        detect_head(_sig((1, 3, 32, 32), ("output0", (1, 21, 84))), _meta(imgsz="[32, 32]"))


def test_a_yolox_that_decodes_its_own_boxes_is_refused_and_runs_as_the_error_says(tmp_path, shared):
    """A YOLOX exported with --decode_in_inference (or a YOLOv6) has raw YOLOX's [B, 3549, 85] at 416: read as raw,
    its pixel boxes were decoded again (exp of pixels) and every candidate was dropped, with a warning at the first
    frame. Set as the error says, it finds what the raw export finds."""
    from pipeline.detect.detector import Detector
    from tests.support.models import decoding_yolox, square_frame

    raw_model = shared("models/yolox_nano_416_dynbatch.onnx")
    decoding = decoding_yolox(raw_model, tmp_path / "decoding.onnx", (416, 416))
    said = r"decoding\.onnx'.* already in pixels .*--decode_in_inference.* 'yolov5'.* color 'bgr' and scale 1"
    with pytest.raises(ConfigError, match=said):
        Detector(DetectorConfig(model=decoding, engine="onnxruntime"))
    square = square_frame(shared("media/person-bicycle-car-detection.mp4"))
    told = DetectorConfig(model=decoding, engine="onnxruntime", head="yolov5", preprocess={"color": "bgr", "scale": 1})
    found = Detector(told).detect_images([square])[0]
    expected = Detector(DetectorConfig(model=raw_model, engine="onnxruntime")).detect_images([square])[0]
    assert len(expected) > 0 and found.class_id.tolist() == expected.class_id.tolist()
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=0.05)
    np.testing.assert_allclose(found.score, expected.score, atol=1e-5)


@pytest.mark.parametrize("head", [None, "RTDETRDecoder"])
@pytest.mark.parametrize("shape", [(1, 300, 84), ("batch", 300, "anchors")])  # static; dynamic, as exported then
def test_an_rtdetr_export_of_ultralytics_before_8_4_is_named_as_such_not_read_or_called_transposed(head, shape):
    """Before 8.4 Ultralytics' RT-DETR gave [B, 300, 4 + classes] (box, then every class's score) where 8.4 gives
    [B, 300, 6]: the error said to export it without a transpose, and read as 'rtdetr' its second class's score
    would be taken for the class id."""
    metadata = _meta(head=head, imgsz="[640, 640]", description="Ultralytics rtdetr-l model trained on coco.yaml")
    if head is None:
        del metadata["head"]
    said = rf"output0\[{str(list(shape))[1:-1]}\] .* RT-DETR .* before 8\.4 .* export it again"
    with pytest.raises(ConfigError, match=said):
        detect_head(_sig(DYNAMIC_IN, ("output0", shape)), metadata)
    assert detect_head(_sig(DYNAMIC_IN, ("output0", (1, 300, 6))), {**metadata, "head": "RTDETRDecoder"}) == "rtdetr"
