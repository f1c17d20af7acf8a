"""A GPU engine fed host RGB frames (CPU preprocess; decode and NMS on the device) gives the ONNX
Runtime CPU detections."""
import av
import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from tests.gpu.helpers import gpu_file


def test_torch_engine_on_host_frames_matches_onnxruntime():
    with av.open(str(gpu_file("media/car-detection.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in (100, 215, 225, 230, 345)]
    config = DetectorConfig(model=gpu_file("models/yolox_nano_416_dynbatch.onnx"), engine="onnxruntime")
    reference, _, _ = Detector(config, max_batch=8).detect_images(frames)
    gpu = Detector(config.model_copy(update={"engine": "torch", "precision": "fp32"}), max_batch=8)
    found, _, _ = gpu.detect_images(frames)
    gpu.close()
    assert len(reference) >= len(frames)
    assert found.class_id.tolist() == reference.class_id.tolist()
    np.testing.assert_allclose(found.xyxy, reference.xyxy, atol=0.5)
    np.testing.assert_allclose(found.score, reference.score, atol=0.01)
