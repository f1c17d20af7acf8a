"""A lane mixing a camera decoded on the CPU (an MJPEG camera, say) with NVDEC cameras: a batch of host RGB and
device NV12 frames is detected in two parts, and each row gets what its frame gets in a batch of its own kind."""
import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.types import FrameBatch
from tests.gpu.helpers import decode_clip, gpu_file
from tests.gpu.test_gpu_detection_parity import _frame


def test_a_batch_of_host_and_device_frames_detects_each_row_as_its_own_kind_would():
    path = gpu_file("media/dog-phone-1080p.mp4")
    host, device = decode_clip(path, "cpu", limit=8, skip=20), decode_clip(path, "nvdec", limit=8, skip=20)
    config = DetectorConfig(model=gpu_file("models/yolox_nano_416_dynbatch.onnx"), engine="torch", precision="fp32")
    detector = Detector(config, max_batch=8)
    try:
        rows = [(host if i % 3 == 1 else device)[i] for i in range(8)]  # rows 1, 4, 7 host, the rest on the device
        mixed = FrameBatch([_frame(decoded, i) for i, decoded in enumerate(rows)], "default")
        found = detector(mixed)
        alone = {kind: FrameBatch([_frame(decoded, i) for i, decoded in enumerate(frames)], "default")
                 for kind, frames in (("host", host), ("device", device))}
        expected = {kind: detector(batch) for kind, batch in alone.items()}
        assert len(found) > 0
        for i in range(8):
            kind = "host" if i % 3 == 1 else "device"
            got, want = found.for_frame(i), expected[kind].for_frame(i)
            assert got.class_id.tolist() == want.class_id.tolist(), (i, kind)
            np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.5)
            np.testing.assert_allclose(got.score, want.score, atol=0.01)
            assert mixed.pad[i].tolist() == alone[kind].pad[i].tolist()
            assert mixed.scale[i] == alone[kind].scale[i]
    finally:
        detector.close()
