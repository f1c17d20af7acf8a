"""A GPU engine fed host RGB frames (CPU preprocess) gives the ONNX Runtime CPU detections.

Runs on the GPU machine only (needs cupy, torch with CUDA and onnx2torch); skipped elsewhere.
"""
import av
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from tests.conftest import shared_file


def _gpu_or_skip():
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("onnx2torch")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA GPU")


@pytest.mark.gpu
def test_torch_engine_on_host_frames_matches_onnxruntime():
    _gpu_or_skip()
    with av.open(str(shared_file("media/car-detection.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in (100, 215, 225, 230, 345)]
    config = DetectorConfig(model=shared_file("models/yolox_nano_416_dynbatch.onnx"), engine="onnxruntime")
    reference, _, _ = Detector(config, max_batch=8).detect_images(frames)
    gpu = Detector(config.model_copy(update={"engine": "torch", "precision": "fp32"}), max_batch=8)
    found, _, _ = gpu.detect_images(frames)
    gpu.close()
    assert len(reference) >= len(frames)
    assert found.class_id.tolist() == reference.class_id.tolist()
    np.testing.assert_allclose(found.xyxy, reference.xyxy, atol=0.5)
    np.testing.assert_allclose(found.score, reference.score, atol=0.01)
