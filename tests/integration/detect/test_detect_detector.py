"""Detector wiring on FrameBatches, engine choice and errors, with the real YOLOX model."""
import importlib.util
from dataclasses import replace

import av
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import detector_plan
from pipeline.detect.detector import Detector
from pipeline.detect.engines import build_engine
from pipeline.errors import ConfigError, EngineError
from pipeline.machine import nvidia_gpu_present
from pipeline.types import Detections, Frame, FrameBatch
from tests.conftest import shared_file


def _first_frame(clip: str, index: int = 0) -> np.ndarray:
    with av.open(str(shared_file(clip))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{clip} has no frame {index}")


def _frame(stream_id: str, image: np.ndarray, pixel_format="rgb24") -> Frame:
    return Frame(stream_id, 0, 0, 0, image, image.shape[1], image.shape[0], pixel_format)


@pytest.fixture(scope="module")
def yolox_config():
    return DetectorConfig(model=shared_file("models/yolox_nano_416_dynbatch.onnx"), engine="onnxruntime")


def test_batch_of_frames_of_different_sizes_maps_boxes_into_each_frame(yolox_config):
    dog = _first_frame("media/dog-848x464.mp4")
    car = _first_frame("media/car-detection.mp4", 230)
    detector = Detector(yolox_config, max_batch=4)
    batch = FrameBatch([_frame("dog", dog), _frame("car", car)], lane="default")
    found = detector(batch)
    assert batch.scale.shape == (2,) and batch.pad.shape == (2, 2)
    np.testing.assert_allclose(batch.scale, [416 / 848, 416 / 768], rtol=1e-3)
    dogs, cars = found.for_frame(0), found.for_frame(1)
    assert "person" in [detector.class_names[c] for c in dogs.class_id]
    assert "car" in [detector.class_names[c] for c in cars.class_id]
    for rows, image in ((dogs, dog), (cars, car)):
        assert (rows.xyxy >= 0).all()
        assert (rows.xyxy[:, [0, 2]] <= image.shape[1]).all() and (rows.xyxy[:, [1, 3]] <= image.shape[0]).all()
    assert (found.track_id == -1).all() and found.xyxy.dtype == np.float32


def test_host_frames_are_detected_when_their_result_is_asked_for_not_at_submit(yolox_config):
    """So a batch held in flight never waits for the next batch's detection (the inference loop submits the
    next before it takes the last one's detections)."""
    car = _first_frame("media/car-detection.mp4", 230)
    detector = Detector(yolox_config, max_batch=4)
    batch = FrameBatch([_frame("car", car)], lane="default")
    expected = detector(FrameBatch([_frame("car", car)], lane="default"))
    runs, infer = [], detector.engine.infer
    detector.engine.infer = lambda inputs: runs.append(1) or infer(inputs)
    result = detector.submit(batch)
    assert runs == []  # nothing ran yet
    found = result()
    assert runs == [1] and len(found) == len(expected) > 0 and len(batch.scale) == 1
    np.testing.assert_array_equal(found.xyxy, expected.xyxy)


def test_classes_filter_keeps_only_the_named_classes(yolox_config):
    dog = _first_frame("media/dog-848x464.mp4")
    detector = Detector(yolox_config.model_copy(update={"classes": ["fire hydrant"]}))
    found, _, _ = detector.detect_images([dog])
    assert len(found) >= 1 and set(found.class_id.tolist()) == {10}


def test_unknown_class_in_filter_fails_at_construction(yolox_config):
    with pytest.raises(ConfigError, match="unknown class 'unicorn'"):
        Detector(yolox_config.model_copy(update={"classes": ["unicorn"]}))


def test_empty_batch_and_empty_frames_give_empty_detections(yolox_config):
    detector = Detector(yolox_config)
    assert len(detector(FrameBatch([], lane="default"))) == 0
    found, _, _ = detector.detect_images([np.zeros((240, 320, 3), np.uint8)])
    assert len(found) == 0 and found.xyxy.shape == (0, 4)


class _DeviceArray:
    """Stands in for a CuPy NV12 image: anything that is not a host numpy array."""

    shape = (48, 64)


def test_device_frames_are_refused_by_the_cpu_engine(yolox_config):
    frame = Frame("cam-1", 0, 0, 0, _DeviceArray(), 64, 32, "nv12")
    with pytest.raises(EngineError, match="cam-1.*needs host RGB frames"):
        Detector(yolox_config)(FrameBatch([frame], lane="default"))


def test_a_batch_mixing_host_and_device_frames_is_refused_by_the_cpu_engine(yolox_config):
    host = _frame("cam-1", np.zeros((32, 64, 3), np.uint8))
    device = Frame("cam-2", 0, 0, 0, _DeviceArray(), 64, 32, "nv12")
    with pytest.raises(EngineError, match="cam-2.*needs host RGB frames"):
        Detector(yolox_config)(FrameBatch([host, device], lane="default"))


def test_a_gpu_engine_detects_a_mixed_batch_in_two_parts_and_puts_each_row_back_in_its_place(yolox_config):
    """The device part and the host part are each detected their own way (tests/gpu/test_gpu_mixed_batch.py runs
    both on a GPU); here each part's detector gives every frame one box scored by its seq, to see the rows."""
    detector = Detector(yolox_config)
    detector._gpu_engine = True

    def part(frames, kind):
        boxes = np.tile(np.float32([0, 0, 8, 8]), (len(frames), 1))
        detections = Detections(boxes, np.array([f.seq for f in frames], np.float32),
                                np.full(len(frames), kind, np.int32), np.arange(len(frames), dtype=np.int32))
        scale = np.array([[f.seq, f.seq] for f in frames], np.float32)
        return detections, scale, -scale

    detector._on_a_step = lambda frames: part(frames, 1)
    detector._detect_host = lambda images: part([next(f for f in frames if f.image is image) for image in images], 0)
    frames = [Frame(f"cam-{seq}", seq, 0, 0, _DeviceArray(), 64, 32, "nv12") if seq % 2 else
              Frame(f"cam-{seq}", seq, 0, 0, np.zeros((32, 64, 3), np.uint8), 64, 32, "rgb24") for seq in range(5)]
    batch = FrameBatch(frames, lane="default")
    found = detector(batch)
    order = np.argsort(found.frame_idx)
    assert found.frame_idx[order].tolist() == [0, 1, 2, 3, 4] and found.score[order].tolist() == [0, 1, 2, 3, 4]
    assert found.class_id[order].tolist() == [0, 1, 0, 1, 0]  # host, device, host, ...
    assert batch.scale.tolist() == [0, 1, 2, 3, 4] and batch.pad[:, 0].tolist() == [0, -1, -2, -3, -4]


@pytest.mark.skipif(nvidia_gpu_present(), reason="this machine has a GPU, auto picks a GPU engine")
def test_auto_engine_falls_back_to_onnxruntime_and_says_why(yolox_config):
    config = yolox_config.model_copy(update={"engine": "auto"})
    plan = detector_plan(config, 8)
    engine, reason = build_engine(config, plan), plan.reason
    assert engine.name == "onnxruntime" and engine.max_batch == 8
    assert reason.startswith("onnxruntime: no CUDA GPU found")
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT" in reason


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_requesting_tensorrt_without_it_is_refused_before_anything_runs(yolox_config):
    config = yolox_config.model_copy(update={"engine": "tensorrt"})
    with pytest.raises(ConfigError, match="detector.engine 'tensorrt' cannot run here"):
        detector_plan(config, 8)
    plan = replace(detector_plan(yolox_config, 8), engine="tensorrt")  # a plan made elsewhere, run here
    with pytest.raises(EngineError):
        build_engine(config, plan)


def test_missing_model_file_names_the_file(tmp_path):
    with pytest.raises(EngineError, match="absent.onnx"):
        Detector(DetectorConfig(model=tmp_path / "absent.onnx", engine="onnxruntime"))
