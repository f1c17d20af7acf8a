"""The torch engine's conversion on the CPU, node by node: the ONNX forms onnx2torch 1.5 lacks or gets wrong with
this torch (opset 18, GridSample, omitted inputs, int arguments) compute what ONNX Runtime computes."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.detect.engines import torch_convert
from tests.support.ultralytics_exports import torchvision_stand_in

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None, reason="needs the test extra's onnx2torch")

X = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _onnx2torch_importable():
    torchvision_stand_in()


def _model(nodes, outputs: list[tuple[str, list]], initializers=(), extra_inputs=(), opset: int = 18):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 6]), *extra_inputs],
        [helper.make_tensor_value_info(name, TensorProto.INT64 if name == "i" else TensorProto.FLOAT, shape)
         for name, shape in outputs],  # "i": TopK's indices
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _const(name: str, value) -> tuple[str, np.ndarray]:
    return name, np.asarray(value, np.int64)


CASES = {
    "Split-18 with num_outputs, uneven": _model(
        [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=3, num_outputs=3)],
        [("a", None), ("b", None), ("c", None)]),
    "Split-18 with a split input": _model(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)], [("a", None), ("b", None)],
        [_const("sizes", [1, 3])]),
    "ReduceMean-18 with an axes input": _model(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], [("y", None)], [_const("axes", [2, 3])]),
    "ReduceMax-18 without axes": _model([helper.make_node("ReduceMax", ["x"], ["y"])], [("y", None)]),
    "Pad-18 constant": _model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant")], [("y", None)],
        [_const("pads", [0, 0, 1, 2, 0, 0, 3, 1])]),
    "Resize-18 nearest x2": _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], [("y", None)],
        [("scales", np.asarray([1, 1, 2, 2], np.float32))]),
    "Clip without min": _model(
        [helper.make_node("Clip", ["x", "", "high"], ["y"])], [("y", None)], [("high", np.asarray(0.5, np.float32))]),
    "TopK with a constant k": _model(
        [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "i"], axis=1)],
        [("y", None), ("i", None)], [_const("flat", [0, -1]), _const("k", [7])]),
    "TopK's values as one output of several (DEIMv2's scores)": _model(
        [helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "t"], axis=1),
         helper.make_node("Cast", ["t"], ["c"], to=TensorProto.FLOAT)],
        [("c", None), ("y", None)], [_const("flat", [0, -1]), _const("k", [7])]),
    "TopK's values as an output, beside a tensor named as the renamed values would be": _model(
        [helper.make_node("Relu", ["x"], ["y_of_TopK"]), helper.make_node("Neg", ["y_of_TopK"], ["n"]),
         helper.make_node("Reshape", ["x", "flat"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "t"], axis=1)],
        [("n", None), ("y", None)], [_const("flat", [0, -1]), _const("k", [7])]),
    "Gather of one constant index": _model(
        [helper.make_node("Gather", ["x", "at"], ["y"], axis=2)], [("y", None)], [_const("at", -2)]),
    "Reshape keeping a dim (0)": _model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], [("y", None)], [_const("shape", [0, 4, 36])]),
    "Tile with constant repeats": _model(
        [helper.make_node("Tile", ["x", "reps"], ["y"])], [("y", None)], [_const("reps", [1, 2, 1, 3])]),
    "GridSample-16 bilinear": _model(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], mode="bilinear", padding_mode="zeros", align_corners=0)],
        [("y", None)], [("grid", np.random.default_rng(1).uniform(-1.1, 1.1, (2, 3, 5, 2)).astype(np.float32))],
        opset=16),
}


@pytest.mark.parametrize("case", CASES)
def test_a_node_onnx2torch_lacks_converts_to_what_onnx_runtime_computes(case, tmp_path):
    import torch

    path = tmp_path / "node.onnx"
    onnx.save(CASES[case], str(path))
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    with torch.inference_mode():
        ours = torch_convert.load_module(path)(torch.from_numpy(X))
    ours = [o.numpy() for o in (ours if isinstance(ours, (tuple, list)) else [ours])]
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o, t, rtol=0, atol=1e-5)


def test_a_trial_converts_once_and_the_engine_takes_that_module(shared):
    model = shared("models/yolox_nano_416_dynbatch.onnx")
    assert torch_convert.trial(model) is None
    first = torch_convert.take_module(model)
    assert torch_convert.take_module(model) is not first  # taken: the next one is converted afresh


def test_a_trial_says_why_a_file_cannot_be_converted(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert torch_convert.trial(broken).startswith(f"'{broken}' is not an ONNX file")
    assert "does not exist" in torch_convert.trial(tmp_path / "missing.onnx")


@pytest.mark.parametrize("case", ["Split-18 with a split input", "TopK with a constant k", "Reshape keeping a dim (0)",
                                  "Tile with constant repeats", "Gather of one constant index"])
def test_constant_arguments_are_baked_in_so_nothing_is_read_back_from_the_gpu(case, tmp_path):
    """onnx2torch reads these arguments from tensors on every call (`.tolist()`): on the GPU a sync per node,
    which a CUDA graph cannot capture. After conversion they are Python ints in the modules."""
    path = tmp_path / "node.onnx"
    onnx.save(CASES[case], str(path))
    module = torch_convert.load_module(path)
    assert [n.target for n in module.graph.nodes if n.op == "get_attr"] == []
