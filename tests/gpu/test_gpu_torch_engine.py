"""The PyTorch engine (onnx2torch, FP32/FP16, CUDA graphs) computes what ONNX Runtime computes."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import batch_buckets
from pipeline.detect.engines.base import bucket_for
from pipeline.detect.engines.torch_engine import TorchEngine
from tests.gpu.helpers import gpu_file


def _inputs(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).uniform(0, 255, (rows, 3, 416, 416)).astype(np.float32)


def _host(engine, outputs) -> np.ndarray:
    """The first output on the host, read on the engine's stream (its work is queued there)."""
    with engine.stream:
        return next(iter(outputs.values())).get()


def _ort(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("precision,tolerance", [("fp32", 2e-3), ("fp16", 0.06)])
def test_torch_engine_outputs_match_onnxruntime(precision, tolerance, report):
    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    engine = TorchEngine(model, DetectorConfig(model=model, precision=precision), max_batch=8)
    x = _inputs(5)
    got = _host(engine, engine.infer({"images": x}))  # a host array goes up on the engine's stream
    expected = _ort(model, x)
    err = np.abs(got - expected)
    scores_err = err[..., 4:].max()
    report(f"torch_vs_ort[{precision}]", max_abs=float(err.max()), score_max_abs=float(scores_err),
           graph=engine.graph_status)
    assert got.shape == expected.shape == (5, 3549, 85)
    assert scores_err < tolerance
    engine.close()


def test_cuda_graph_is_captured_and_replays_give_fresh_results():
    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    engine = TorchEngine(model, DetectorConfig(model=model, precision="fp32"), max_batch=4)
    a, b = _inputs(3), _inputs(2)
    first = _host(engine, engine.infer({"images": a}))
    second = _host(engine, engine.infer({"images": b}))
    assert engine.graph_status == "cuda graphs", engine.graph_status
    assert first.shape[0] == 3 and second.shape[0] == 2
    np.testing.assert_allclose(second, _ort(model, b), atol=2e-3)
    engine.close()


def test_writing_into_the_engine_input_buffer_skips_the_copy_and_gives_the_same_outputs():
    import cupy

    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    engine = TorchEngine(model, DetectorConfig(model=model, precision="fp32"), max_batch=8)
    x = _inputs(6)
    buffer = engine.input_buffer(6)
    with engine.stream:
        buffer[...] = cupy.asarray(x)
    got = _host(engine, engine.infer({"images": buffer}))
    np.testing.assert_allclose(got, _ort(model, x), atol=2e-3)
    engine.close()


def test_batches_round_up_to_power_of_two_buckets():
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert bucket_for(33, batch_buckets(48)) == 48


def test_a_yolox_that_decodes_its_own_boxes_is_refused_on_the_gpu_and_runs_as_the_error_says(tmp_path):
    """The load-time check reads the engine's device output; set as the error says, the model finds on the GPU what
    the raw export finds."""
    from pipeline.detect.detector import Detector
    from pipeline.errors import ConfigError
    from tests.support.models import decoding_yolox, square_frame

    raw_model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    decoding = decoding_yolox(raw_model, tmp_path / "decoding.onnx", (416, 416))
    with pytest.raises(ConfigError, match="already in pixels"):
        Detector(DetectorConfig(model=decoding, engine="torch", precision="fp32"))
    square = square_frame(gpu_file("media/person-bicycle-car-detection.mp4"))
    told = DetectorConfig(model=decoding, engine="torch", precision="fp32", head="yolov5",
                          preprocess={"color": "bgr", "scale": 1})
    found = Detector(told).detect_images([square])[0]
    expected = Detector(DetectorConfig(model=raw_model, engine="torch", precision="fp32")).detect_images([square])[0]
    assert len(expected) > 0 and found.class_id.tolist() == expected.class_id.tolist()
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=0.1)
