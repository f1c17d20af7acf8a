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
MARGIN = 0.05
MODELS = ["models/yolox_nano_416_dynbatch.onnx", "models/deimv2_hgnetv2_femto_coco_416.onnx"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _match(cpu, gpu) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    """Greedy same-class matching by score order: matched IoUs and score differences, and the scores of the
    unmatched CPU and GPU detections."""
    ious, shifts, used, matched = [], [], set(), set()
    if len(cpu) and len(gpu):
        table = _iou(cpu.xyxy, gpu.xyxy)
        table[cpu.class_id[:, None] != gpu.class_id[None, :]] = 0
        for i in np.argsort(-cpu.score, kind="stable"):
            row = table[i].copy()
            row[list(used)] = -1
            j = int(np.argmax(row))
            if row[j] >= 0.5:
                used.add(j)
                matched.add(int(i))
                ious.append(float(table[i, j]))
                shifts.append(abs(float(cpu.score[i] - gpu.score[j])))
    unmatched = lambda dets, taken: np.delete(dets.score, sorted(taken))  # noqa: E731
    return ious, shifts, unmatched(cpu, matched), unmatched(gpu, used)


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
    ious, shifts, missed, extra, total = [], [], [], [], 0
    for start in range(0, len(cpu_frames), 8):
        rows = range(start, min(start + 8, len(cpu_frames)))
        cpu_batch = FrameBatch([_frame(cpu_frames[i], i) for i in rows], "default")
        gpu_batch = FrameBatch([_frame(gpu_frames[i], i) for i in rows], "default")
        cpu_dets, gpu_dets = cpu_detector(cpu_batch), gpu_detector(gpu_batch)
        np.testing.assert_array_equal(gpu_batch.pad, cpu_batch.pad)
        for row in range(len(rows)):
            found = _match(cpu_dets.for_frame(row), gpu_dets.for_frame(row))
            ious += found[0]
            shifts += found[1]
            missed += found[2].tolist()
            extra += found[3].tolist()
            total += len(cpu_dets.for_frame(row))
    ious_arr = np.asarray(ious) if ious else np.zeros(1)
    # A detection within MARGIN of conf_threshold on one side may fall under it on the other (NVDEC's and
    # FFmpeg's pictures differ by a grey level here and there): only those clear of it must find a partner.
    clear = [score for score in missed + extra if score >= config.conf_threshold + MARGIN]
    report(f"detection_parity[{Path(model_file).stem}, {clip}]", cpu_detections=total, matched=len(ious),
           unmatched_cpu=len(missed), unmatched_gpu=len(extra), unmatched_clear_of_threshold=len(clear),
           iou_min=float(ious_arr.min()), iou_median=float(np.median(ious_arr)),
           share_iou_ge_098=float((ious_arr >= 0.98).mean()), score_shift_median=float(np.median(shifts or [0])),
           score_shift_p95=float(np.percentile(shifts or [0], 95)), engine=gpu_detector.engine.graph_status)
    # a failed capture runs eagerly: DEIMv2's did, and its process crashed in a later test
    assert gpu_detector.engine.graph_status == "cuda graphs"
    assert total > 0
    assert float(np.median(ious_arr)) >= 0.98
    assert (ious_arr >= 0.98).mean() >= 0.85
    # the matched scores agree: no drift that would carry detections across the threshold
    assert np.median(shifts) <= 0.01 and np.percentile(shifts, 95) <= 0.05
    assert len(clear) <= max(3, 0.05 * total), sorted(clear)
    gpu_detector.close()
    cpu_detector.close()


def _frame(decoded, seq: int) -> Frame:
    return Frame("clip", seq, decoded.pts_ns, 0, decoded.image, decoded.width, decoded.height,
                 decoded.pixel_format)
