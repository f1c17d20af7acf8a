"""Two batches in flight on the torch engine (`detector.workers` 2: the engine and its twin, each on its own
CUDA stream, the weights shared) find exactly what one batch at a time finds, called from two threads at once."""
from __future__ import annotations

import threading

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.types import Frame, FrameBatch
from tests.gpu.helpers import decode_clip, gpu_file

BATCH = 8


def _batches(decoded) -> list[list[Frame]]:
    frames = [Frame("clip", i, d.pts_ns, 0, d.image, d.width, d.height, d.pixel_format) for i, d in enumerate(decoded)]
    return [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]


def _rows(detections) -> np.ndarray:
    table = np.column_stack([detections.frame_idx, detections.class_id, detections.score, detections.xyxy])
    return table[np.lexsort(table.T[::-1])]


def test_two_batches_in_flight_find_what_one_at_a_time_finds(report):
    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    decoded = decode_clip(gpu_file("media/person-bicycle-car-detection.mp4"), "nvdec", limit=64)
    config = DetectorConfig(model=model, engine="torch")
    one = Detector(config.model_copy(update={"workers": 1}), max_batch=BATCH)
    two = Detector(config.model_copy(update={"workers": 2}), max_batch=BATCH)
    try:
        two.warm_up()
        assert two.workers == 2 and len(two._twins) == 1 and two._twins[0].stream.ptr != two.engine.stream.ptr
        batches = _batches(decoded)
        expected = [_rows(one(FrameBatch(frames, "default"))) for frames in batches]
        found: dict[int, np.ndarray] = {}

        def detect(indices) -> None:
            for _ in range(3):  # several rounds, so the two threads overlap on the GPU
                for i in indices:
                    found[i] = _rows(two(FrameBatch(batches[i], "default")))

        threads = [threading.Thread(target=detect, args=(range(k, len(expected), 2),)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(found) == list(range(len(expected)))
        worst = max(float(np.abs(found[i] - expected[i]).max()) if len(expected[i]) else 0.0 for i in found)
        report("twin_engines", batches=len(expected), detections=int(sum(len(e) for e in expected)), max_abs=worst)
        assert sum(len(e) for e in expected) > 0
        for i, rows in enumerate(expected):
            assert found[i].shape == rows.shape
            np.testing.assert_allclose(found[i], rows, rtol=0, atol=1e-3)
    finally:
        one.close()
        two.close()


def test_batches_queued_on_one_stream_find_what_one_at_a_time_finds(report):
    """`submit` queues every batch before any is collected (deeper than the inference loop ever queues); with
    max_candidates 5 most images hold more candidates than the fused kernel may keep, so those batches are run
    again on the general path when collected, after later batches overwrote the engine's outputs."""
    model = gpu_file("models/yolox_nano_416_dynbatch.onnx")
    decoded = decode_clip(gpu_file("media/person-bicycle-car-detection.mp4"), "nvdec", limit=64)
    batches = _batches(decoded)
    for update in ({}, {"conf_threshold": 0.05, "max_candidates": 5}):
        detector = Detector(DetectorConfig(model=model, engine="torch", **update), max_batch=BATCH)
        try:
            detector.warm_up()
            assert detector.queue_next
            expected = [_rows(detector(FrameBatch(frames, "default"))) for frames in batches]
            pending = [detector.submit(FrameBatch(frames, "default")) for frames in batches]
            found = [_rows(result()) for result in pending]
        finally:
            detector.close()
        report("queued_batches", update=str(update), batches=len(batches),
               detections=int(sum(len(e) for e in expected)))
        assert sum(len(e) for e in expected) > 0
        for rows, want in zip(found, expected):
            assert rows.shape == want.shape
            np.testing.assert_array_equal(rows, want)
