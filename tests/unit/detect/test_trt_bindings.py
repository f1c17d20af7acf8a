"""TensorRT inputs and outputs planned without TensorRT (trt_bindings.py), for every layout the detector reads.

The signatures are those of real files: what ONNX Runtime reports for Ultralytics' dynamic and static exports
(tests/integration/detect/test_trt_bindings_exports.py plans every generated export too) and for the shared
DEIM and YOLOX models."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.engines.trt_bindings import check_outputs, plan_bindings
from pipeline.detect.heads import ModelSignature, TensorInfo


def signature(inputs, outputs) -> ModelSignature:
    return ModelSignature(tuple(TensorInfo(n, s) for n, s in inputs), tuple(TensorInfo(n, s) for n, s in outputs))


IMAGES_DYNAMIC = ("images", ("batch", 3, "height", "width"))
DYNAMIC, STATIC = (1, 32, 64), (1, 1, 1)  # image profile (min, opt, max) batch at max 64, opt 32; static: its own 1
CASES = {  # name -> (signature, head, input (w, h), classes, expected outputs, expected profile batches)
    "ultralytics dynamic, not simplified": (
        signature([IMAGES_DYNAMIC], [("output0", ("batch", "Concatoutput0_dim_1", "anchors"))]),
        "ultralytics", (640, 640), 80, {"output0": (None, 84, 8400)}, DYNAMIC),
    "ultralytics static": (
        signature([("images", (1, 3, 320, 320))], [("output0", (1, 84, 2100))]),
        "ultralytics", (320, 320), 80, {"output0": (None, 84, 2100)}, STATIC),
    "yolov10 end to end, dynamic": (
        signature([IMAGES_DYNAMIC], [("output0", ("batch", "Concatoutput0_dim_1", 6))]),
        "end2end", (320, 320), 80, {"output0": (None, None, 6)}, DYNAMIC),
    "rtdetr static": (
        signature([("images", (1, 3, 320, 320))], [("output0", (1, 300, 6))]),
        "rtdetr", (320, 320), 80, {"output0": (None, 300, 6)}, STATIC),
    "deim": (
        signature([("images", ("N", 3, 320, 320)), ("orig_target_sizes", ("N", 2))],
                  [("labels", ("N", 300)), ("boxes", ("N", 300, 4)), ("scores", ("N", 300))]),
        "detr", (320, 320), None, {"labels": (None, 300), "boxes": (None, 300, 4), "scores": (None, 300)}, DYNAMIC),
    "yolox": (
        signature([("images", (1, 3, 416, 416))], [("output", (1, 3549, 85))]),
        "yolox", (416, 416), 80, {"output": (None, 3549, 85)}, STATIC),
}


@pytest.mark.parametrize("case", CASES)
def test_symbolic_dims_are_filled_from_what_the_head_implies(case):
    sig, head, size, classes, expected, batches = CASES[case]
    bindings = plan_bindings(sig, head, size, classes, max_batch=64, opt_batch=32)
    assert bindings.image_input == sig.inputs[0].name
    assert bindings.outputs == expected
    image = bindings.profiles[0]
    assert (image.min, image.opt, image.max) == tuple((b, 3, size[1], size[0]) for b in batches)


def test_deims_second_input_gets_its_own_profile():
    sig, head, size, classes, *_ = CASES["deim"]
    sizes = plan_bindings(sig, head, size, classes, max_batch=16).profiles[1]
    assert (sizes.name, sizes.min, sizes.opt, sizes.max) == ("orig_target_sizes", (1, 2), (16, 2), (16, 2))


@pytest.mark.parametrize("head, size, classes, match", [
    ("ultralytics", (320, 320), 79, "a dim is 84, expected 83"),  # the class names do not fit the channels
    ("ultralytics", (416, 416), 80, "a dim is 2100, expected 3549"),  # another input size than exported
    ("yolox", (320, 320), 80, "a dim is 84, expected 2100"),  # a wrong head: YOLOX has [B, points, 85]
])
def test_a_fixed_dim_that_contradicts_the_head_is_refused_naming_the_output(head, size, classes, match):
    sig = CASES["ultralytics static"][0]
    with pytest.raises(ValueError, match=f"output 'output0' .*{match}"):
        plan_bindings(sig, head, size, classes, max_batch=8)


def test_a_static_batch_export_gets_a_profile_of_its_own_batch_only():
    """TensorRT refuses a profile whose batch differs from a static one ("kOPT dimensions in profile 0 are
    [8,3,320,320] but input has static dimensions [1,3,320,320]"): Ultralytics' default export failed to build."""
    sig = signature([("images", (4, 3, 320, 320)), ("orig_target_sizes", (4, 2))], [("output0", (4, 84, 2100))])
    bindings = plan_bindings(sig, "ultralytics", (320, 320), 80, max_batch=8, opt_batch=2)
    assert bindings.fixed_batch == 4
    assert [(p.min[0], p.opt[0], p.max[0]) for p in bindings.profiles] == [(4, 4, 4), (4, 4, 4)]
    assert plan_bindings(*CASES["ultralytics dynamic, not simplified"][0:4], max_batch=8).fixed_batch is None


def test_an_extra_input_with_dynamic_dims_cannot_be_planned():
    sig = signature([IMAGES_DYNAMIC, ("extra", ("batch", "n"))], [("output0", ("batch", 84, "anchors"))])
    with pytest.raises(ValueError, match=r"input 'extra' \['batch', 'n'\] has dynamic dims besides the batch"):
        plan_bindings(sig, "ultralytics", (320, 320), 80, max_batch=8)


def test_what_tensorrt_infers_is_checked_against_the_plan():
    bindings = plan_bindings(*CASES["yolov10 end to end, dynamic"][0:4], max_batch=8)
    check_outputs(bindings, {"output0": (8, 300, 6)}, rows=8)  # K is free: any K with 6 columns
    with pytest.raises(ValueError, match=r"output 'output0' the shape \[8, 300, 7\] for 8 rows; expected \[8, '\*', 6\]"):
        check_outputs(bindings, {"output0": (8, 300, 7)}, rows=8)
    with pytest.raises(ValueError, match="output 'output0'"):
        check_outputs(bindings, {"output0": (4, 300, 6)}, rows=8)


@pytest.mark.parametrize("model, head, size", [
    ("models/deimv2_hgnetv2_atto_coco_320.onnx", "detr", (320, 320)),
    ("models/yolox_nano_416_dynbatch.onnx", "yolox", (416, 416)),
])
def test_the_plan_of_a_shared_model_fits_what_onnx_runtime_computes(shared, model, head, size):
    from pipeline.detect.engines.onnxruntime import open_session, signature_of

    session = open_session(shared(model), ["CPUExecutionProvider"], threads=1)
    sig = signature_of(session)
    bindings = plan_bindings(sig, head, size, 80 if head == "yolox" else None, max_batch=4)
    feed = {"images": np.zeros((3, 3, size[1], size[0]), np.float32)}
    if head == "detr":
        feed["orig_target_sizes"] = np.full((3, 2), 320, np.int64)
    outputs = session.run(None, feed)
    check_outputs(bindings, {o.name: out.shape for o, out in zip(sig.outputs, outputs)}, rows=3)
