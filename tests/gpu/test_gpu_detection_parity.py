"""The GPU path (NVDEC -> fused letterbox -> torch FP16 -> GPU post-processing) finds what the CPU path finds, for
the shared real models: YOLOX-Nano (grid decode and NMS) and DEIMv2 (a DETR: top-K queries, boxes in source pixels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.types import Frame, FrameBatch
from tests.gpu.helpers import decode_clip, gpu_file

CLIPS = {  # clip: first frame used (where the objects are)
    "media/person-bicycle-car-detection.mp4": 0,
    "media/car-detection.mp4": 100,
    "media/dog-phone-1080p.mp4": 0,
}
MODELS = ["models/yolox_nano_416_dynbatch.onnx", "models/deimv2_hgnetv2_femto_coco_416.onnx"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _match(cpu, gpu) -> tuple[list[float], int, int]:
    """Greedy same-class matching by score order: matched IoUs, unmatched CPU, unmatched GPU."""
    ious, used = [], set()
    if len(cpu) and len(gpu):
        table = _iou(cpu.xyxy, gpu.xyxy)
        table[cpu.class_id[:, None] != gpu.class_id[None, :]] = 0
        for i in np.argsort(-cpu.score, kind="stable"):
            row = table[i].copy()
            row[list(used)] = -1
            j = int(np.argmax(row))
            if row[j] >= 0.5:
                used.add(j)
                ious.append(float(table[i, j]))
    return ious, len(cpu) - len(ious), len(gpu) - len(used)


@pytest.mark.parametrize("model_file", MODELS)
@pytest.mark.parametrize("clip", list(CLIPS))
def test_gpu_detections_match_cpu_detections_on_real_clips(model_file, clip, report):
    model = gpu_file(model_file)
    path = gpu_file(clip)
    config = DetectorConfig(model=model, engine="onnxruntime")
    cpu_detector = Detector(config, max_batch=8)
    gpu_detector = Detector(config.model_copy(update={"engine": "torch"}), max_batch=8)
    cpu_frames = decode_clip(path, "cpu", limit=40, skip=CLIPS[clip])
    gpu_frames = decode_clip(path, "nvdec", limit=40, skip=CLIPS[clip])
    ious, missed, extra, total = [], 0, 0, 0
    for start in range(0, len(cpu_frames), 8):
        rows = range(start, min(start + 8, len(cpu_frames)))
        cpu_batch = FrameBatch([_frame(cpu_frames[i], i) for i in rows], "default")
        gpu_batch = FrameBatch([_frame(gpu_frames[i], i) for i in rows], "default")
        cpu_dets, gpu_dets = cpu_detector(cpu_batch), gpu_detector(gpu_batch)
        np.testing.assert_array_equal(gpu_batch.pad, cpu_batch.pad)
        for row in range(len(rows)):
            found = _match(cpu_dets.for_frame(row), gpu_dets.for_frame(row))
            ious += found[0]
            missed += found[1]
            extra += found[2]
            total += len(cpu_dets.for_frame(row))
    ious_arr = np.asarray(ious) if ious else np.zeros(1)
    report(f"detection_parity[{Path(model_file).stem}, {clip}]", cpu_detections=total, matched=len(ious),
           unmatched_cpu=missed, unmatched_gpu=extra, iou_min=float(ious_arr.min()), iou_median=float(np.median(ious_arr)),
           share_iou_ge_098=float((ious_arr >= 0.98).mean()), engine=gpu_detector.engine.graph_status)
    # a failed capture runs eagerly: DEIMv2's did, and its process crashed in a later test
    assert gpu_detector.engine.graph_status == "cuda graphs"
    assert total > 0
    assert float(np.median(ious_arr)) >= 0.98
    assert (ious_arr >= 0.98).mean() >= 0.85
    assert missed + extra <= max(3, 0.1 * total)
    gpu_detector.close()
    cpu_detector.close()


def _frame(decoded, seq: int) -> Frame:
    return Frame("clip", seq, decoded.pts_ns, 0, decoded.image, decoded.width, decoded.height,
                 decoded.pixel_format)
