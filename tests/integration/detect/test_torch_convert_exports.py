"""The torch engine's conversion on the CPU (pipeline/detect/engines/torch_convert.py), on every Ultralytics export
(tests/support/ultralytics_exports.py): the module computes what ONNX Runtime computes, and TorchScript / .pt2
files are read and recognised without an ONNX file."""
import importlib.util

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.detect.engines.onnxruntime import read_model_info as read_onnx_info
from pipeline.detect.engines.torch_convert import load_module, read_model_info
from pipeline.detect.names import names_from_metadata
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError, EngineError
from tests.conftest import shared_file
from tests.support.frames import letterboxed
from tests.support.ultralytics_exports import (
    CASES, MODELS, SIZE, TORCHSCRIPT_MODELS, needs_ultralytics, torchvision_stand_in,
)

pytestmark = [
    pytest.mark.slow,
    needs_ultralytics,
    pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None, reason="needs the test extra's onnx2torch"),
]


@pytest.fixture(scope="module", autouse=True)
def _onnx2torch_importable():
    torchvision_stand_in()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two real frames letterboxed to (2, 3, SIZE, SIZE) float32 RGB / 255."""
    return letterboxed(shared_file("media/person-bicycle-car-detection.mp4"), SIZE)


def _run(module, x: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415

    with torch.inference_mode():
        out = module(torch.from_numpy(x.copy()))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def _comparable(head: str, out: np.ndarray) -> np.ndarray:
    """The whole output of an `ultralytics` head; of the top-300 heads, the sorted scores: random weights give
    scores that tie to the fifth digit, so which box is 300th and in what order is float noise."""
    return out if head == "ultralytics" else np.sort(out[..., 4], axis=1)


@pytest.mark.parametrize("model, variant", CASES)
def test_the_converted_module_computes_what_onnx_runtime_computes(exports, model, variant, images):
    """Unsimplified exports too (onnxslim runs before onnx2torch). Static exports take one image at a time."""
    import onnxruntime as ort  # noqa: PLC0415

    path = exports.get(model, variant).path
    x = images if variant.startswith("dynamic") else images[:1]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = _run(load_module(path), x)
    assert ours.shape == theirs.shape and MODELS[model][2] in ours.shape[1:]
    head = MODELS[model][1]
    difference = float(np.abs(_comparable(head, ours) - _comparable(head, theirs)).max())
    print(f"\n[torch vs onnxruntime] {model} {variant}: max abs difference {difference:.2e}")
    assert difference <= 1e-4 * max(1.0, float(np.abs(theirs).max()))


@pytest.mark.parametrize("model", TORCHSCRIPT_MODELS)
def test_a_torchscript_export_is_recognised_from_its_metadata_and_equals_pytorch(exports, model, images):
    """Ultralytics writes its metadata into the archive's config.txt: head, size and names come from there."""
    import torch  # noqa: PLC0415

    export = exports.get(model, "torchscript")
    signature, metadata = read_model_info(export.path)
    config = DetectorConfig(model=export.path)
    assert detect_head(signature, metadata) == MODELS[model][1]
    assert input_size(signature, config, metadata) == (SIZE, SIZE)
    assert names_from_metadata(metadata) == [str(i) for i in range(80)]
    with torch.inference_mode():
        theirs = export.network(torch.from_numpy(images.copy()))
    theirs = (theirs[0] if isinstance(theirs, (tuple, list)) else theirs).numpy()
    head = MODELS[model][1]
    ours = _run(load_module(export.path), images)  # a batch of 2, though traced at 1
    np.testing.assert_allclose(_comparable(head, ours), _comparable(head, theirs), rtol=0,
                               atol=1e-4 * max(1.0, float(np.abs(theirs).max())))


def test_a_pt2_export_without_metadata_is_recognised_from_its_shapes(exports, images):
    """No config.txt: the input size is the shape torch.export recorded, the head follows from the output."""
    export = exports.get("yolo11n", "pt2")
    signature, metadata = read_model_info(export.path)
    assert metadata == {}
    assert detect_head(signature, metadata) == "ultralytics"
    assert input_size(signature, DetectorConfig(model=export.path), metadata) == (SIZE, SIZE)
    onnx_out = _run(load_module(exports.get("yolo11n", "dynamic").path), images)
    np.testing.assert_allclose(_run(load_module(export.path), images), onnx_out, rtol=0, atol=1e-2)


@pytest.mark.parametrize("variant", ["torchscript", "pt2"])
def test_onnx_runtime_refuses_torch_files_and_names_the_engine_that_runs_them(exports, variant):
    path = exports.get("yolo11n", variant).path
    with pytest.raises(EngineError, match="ONNX Runtime cannot run it; use engine 'torch'"):
        read_onnx_info(path)
    with pytest.raises(ConfigError, match=r"onnxruntime reads ONNX files, not .*: engine torch does"):
        Detector(DetectorConfig(model=path, engine="onnxruntime"), max_batch=1)
