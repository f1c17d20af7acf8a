"""The GPU path (NVDEC -> fused letterbox -> torch engine -> GPU post-processing) finds what the CPU path finds, for
the shared real models: YOLOX-Nano (FP16; grid decode and NMS) and DEIMv2 (a DETR, FP32: top-K queries, boxes in
source pixels).

NVDEC's pictures differ from FFmpeg's by a grey level here and there, so a detection just above the threshold on
one side may fall just under it on the other. Both sides therefore detect down to THRESHOLD - MARGIN, and every
detection at or above THRESHOLD on either side must find a partner (same class, IoU >= 0.5) at any score on the
other. The two pictures give each detection a slightly different score (on the H200 on 2026-12-04, per clip: a
median difference of 0.001-0.020, a 95th percentile of 0.002-0.058, the mean signed difference +0.028 on
YOLOX-Nano's 6 pairs of car-detection, a few far cars seen in consecutive frames, and within +-0.007 elsewhere).
Per clip the median difference (<= 0.03) and its 95th percentile (<= 0.1) are bounded, so no broad error of the
scores passes, and over a model's three clips together the mean signed difference (<= 0.01; +0.001 measured
for each model), so no drift of them all one way carries detections across the threshold. A single pair's
difference is reported (its largest), not bounded: a detection it would carry across the threshold finds no
partner, which is bounded."""
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
THRESHOLD = DetectorConfig.model_fields["conf_threshold"].default
MARGIN = 0.05
MODELS = ["models/yolox_nano_416_dynbatch.onnx", "models/deimv2_hgnetv2_femto_coco_416.onnx"]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _match(cpu, gpu) -> tuple[list[tuple[float, float, float]], list[float]]:
    """Greedy same-class matching by CPU score order: (IoU, CPU score, GPU score) of the pairs, and the scores of
    the detections left without a partner on either side."""
    pairs, used, matched = [], set(), set()
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
                pairs.append((float(table[i, j]), float(cpu.score[i]), float(gpu.score[j])))
    alone = [*np.delete(cpu.score, sorted(matched)), *np.delete(gpu.score, sorted(used))]
    return pairs, [float(score) for score in alone]


@pytest.mark.parametrize("model_file", MODELS)
def test_gpu_detections_match_cpu_detections_on_real_clips(model_file, report):
    model = gpu_file(model_file)
    config = DetectorConfig(model=model, engine="onnxruntime", conf_threshold=THRESHOLD - MARGIN)
    cpu_detector = Detector(config, max_batch=8)
    gpu_detector = Detector(config.model_copy(update={"engine": "torch"}), max_batch=8)
    problems, every_shift = [], []
    try:
        for clip, skip in CLIPS.items():
            pairs, alone, total = _compare(cpu_detector, gpu_detector, gpu_file(clip), skip)
            ious = np.asarray([pair[0] for pair in pairs] or [0.0])
            measured = [pair[2] - pair[1] for pair in pairs]  # GPU score - CPU score
            every_shift += measured  # pooled: measured pairs only, never an empty clip's placeholder
            shifts = np.asarray(measured or [1.0])
            figures = dict(cpu_detections=total, matched=len(pairs), unmatched=len(alone), iou_min=float(ious.min()),
                           iou_median=float(np.median(ious)), share_iou_ge_098=float((ious >= 0.98).mean()),
                           score_shift_mean=float(shifts.mean()), score_shift_abs_median=float(np.median(abs(shifts))),
                           score_shift_abs_p95=float(np.percentile(abs(shifts), 95)),
                           score_shift_abs_max=float(abs(shifts).max()))
            report(f"detection_parity[{Path(model_file).stem}, {clip}]", **figures,
                   engine=gpu_detector.engine.graph_status)
            checks = {"no detection": total > 0, "median IoU < 0.98": figures["iou_median"] >= 0.98,
                      "under 85% of IoUs >= 0.98": figures["share_iou_ge_098"] >= 0.85,
                      "median score difference > 0.03": figures["score_shift_abs_median"] <= 0.03,
                      "95th percentile score difference > 0.1": figures["score_shift_abs_p95"] <= 0.1,
                      f"{len(alone)} without a partner: {sorted(alone)}": len(alone) <= max(3, 0.05 * total)}
            problems += [f"{clip}: {what}" for what, ok in checks.items() if not ok]
        # a failed capture runs eagerly: DEIMv2's did, and its process crashed in a later test
        assert gpu_detector.engine.graph_status == "cuda graphs"
        assert not problems, problems
        drift = np.mean(every_shift)
        assert abs(drift) <= 0.01, f"scores drift by {drift:+.4f} over {len(every_shift)} pairs"
    finally:
        gpu_detector.close()
        cpu_detector.close()


def _compare(cpu_detector, gpu_detector, path, skip: int):
    """40 frames of a clip through both detectors: the pairs at or above THRESHOLD (IoU, CPU score, GPU score),
    the scores at or above it left without a partner, and the CPU's detections at or above it."""
    cpu_frames = decode_clip(path, "cpu", limit=40, skip=skip)
    gpu_frames = decode_clip(path, "nvdec", limit=40, skip=skip)
    pairs, alone, total = [], [], 0
    for start in range(0, len(cpu_frames), 8):
        rows = range(start, min(start + 8, len(cpu_frames)))
        cpu_batch = FrameBatch([_frame(cpu_frames[i], i) for i in rows], "default")
        gpu_batch = FrameBatch([_frame(gpu_frames[i], i) for i in rows], "default")
        cpu_dets, gpu_dets = cpu_detector(cpu_batch), gpu_detector(gpu_batch)
        np.testing.assert_array_equal(gpu_batch.pad, cpu_batch.pad)
        for row in range(len(rows)):
            found, left = _match(cpu_dets.for_frame(row), gpu_dets.for_frame(row))
            pairs += [pair for pair in found if max(pair[1:]) >= THRESHOLD]
            alone += [score for score in left if score >= THRESHOLD]
            total += int((cpu_dets.for_frame(row).score >= THRESHOLD).sum())
    return pairs, alone, total


def _frame(decoded, seq: int) -> Frame:
    return Frame("clip", seq, decoded.pts_ns, 0, decoded.image, decoded.width, decoded.height,
                 decoded.pixel_format)
