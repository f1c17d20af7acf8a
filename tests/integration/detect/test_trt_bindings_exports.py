"""The TensorRT engine's plan of inputs and outputs (trt_bindings.py) for every Ultralytics export
(tests/support/ultralytics_exports.py), checked against the shapes ONNX Runtime computes: TensorRT itself
cannot be installed here, its plan can be checked on the real files."""
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.engines.onnxruntime import open_session, read_model_info
from pipeline.detect.engines.trt_bindings import check_outputs, plan_bindings
from pipeline.detect.names import names_from_metadata
from pipeline.detect.recognize import detect_head, input_size
from tests.support.ultralytics_exports import CASES, MODELS, SIZE, needs_ultralytics

pytestmark = [pytest.mark.slow, needs_ultralytics]


@pytest.mark.parametrize("model, variant", CASES)
def test_the_tensorrt_plan_of_every_export_fits_what_onnx_runtime_computes(exports, model, variant):
    path = exports.get(model, variant).path
    signature, metadata = read_model_info(path)
    head = detect_head(signature, metadata)
    size = input_size(signature, DetectorConfig(model=path), metadata)
    bindings = plan_bindings(signature, head, size, len(names_from_metadata(metadata)), max_batch=8)
    rows = 2 if variant.startswith("dynamic") else 1
    assert bindings.profiles[0].max == (8 if rows == 2 else 1, 3, SIZE, SIZE)  # a static export's batch is 1
    width = {"ultralytics": 84, "end2end": 6, "rtdetr": 6}[MODELS[model][1]]
    assert bindings.outputs["output0"][-1 if width == 6 else 1] == width
    session = open_session(path, ["CPUExecutionProvider"], threads=2)
    out = session.run(None, {"images": np.zeros((rows, 3, SIZE, SIZE), np.float32)})[0]
    check_outputs(bindings, {"output0": out.shape}, rows)
