"""INT8 calibration frames come from the configured streams, preprocessed exactly like live frames."""
import numpy as np
import pytest

from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError, EngineError
from pipeline.runtime.calibration import sample_calibration_inputs
from tests.conftest import shared_file


def test_calibration_frames_are_spread_over_streams_and_preprocessed_for_the_model(tmp_path):
    config = PipelineConfig.model_validate({
        "streams": [{"id": "lot", "url": str(shared_file("media/car-detection.mp4"))},
                    {"id": "dog", "url": str(shared_file("media/dog-848x464.mp4"))},
                    {"id": "gone", "url": str(tmp_path / "missing.mp4")}],
        "detector": {"model": str(shared_file("models/yolox_nano_416_dynbatch.onnx")), "calibration_frames": 30},
    })
    inputs = sample_calibration_inputs(config, every=5)
    assert len(inputs) == 20  # 10 per readable stream (30 over 3 streams), the missing file skipped
    assert {x.shape for x in inputs} == {(3, 416, 416)} and {x.dtype for x in inputs} == {np.dtype(np.float32)}
    assert all(0 <= x.min() and x.max() <= 255 for x in inputs)  # YOLOX takes 0..255
    assert np.all(inputs[0][:, -1, :] == 114)  # YOLOX letterbox pads bottom/right with 114
    assert len({float(x.mean()) for x in inputs}) == 20  # different frames, not one repeated


def _config(streams: list[dict]) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "streams": streams,
        "detector": {"model": str(shared_file("models/yolox_nano_416_dynbatch.onnx")), "calibration_frames": 8},
    })


def test_calibration_without_streams_says_where_its_frames_come_from():
    with pytest.raises(ConfigError, match="streams.*precision fp16"):
        sample_calibration_inputs(_config([]))


def test_calibration_from_streams_none_of_which_can_be_read_is_an_error_naming_them(tmp_path):
    streams = [{"id": "gone", "url": str(tmp_path / "missing.mp4")}, {"id": "lost", "url": str(tmp_path / "lost.mp4")}]
    with pytest.raises(EngineError, match=r"no frames.*'gone', 'lost'.*precision fp16"):
        sample_calibration_inputs(_config(streams))
