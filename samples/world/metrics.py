"""Detection metrics in numpy: IoU, greedy matching, COCO-style mAP with 101-point interpolation.

Ground truth may carry an `ignore` flag (heavily occluded or tiny objects): a detection that matches
an ignored box is neither a true nor a false positive, and ignored boxes never count as misses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
RECALL_POINTS = np.linspace(0, 1, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4), xyxy pixels -> (N, M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class ImageEval:
    """Detections and ground truth of one image. Boxes xyxy (N, 4); classes int; scores float."""

    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_classes: np.ndarray
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    gt_ignore: np.ndarray  # (M,) bool


def _match_class(images: list[ImageEval], cls: int, thr: float):
    """(scores, tp flags, n_gt) of one class at one IoU threshold; ignored matches are dropped."""
    scores, tps, n_gt = [], [], 0
    for im in images:
        dm = im.det_classes == cls
        gm = im.gt_classes == cls
        gb, gi = im.gt_boxes[gm], im.gt_ignore[gm]
        n_gt += int((~gi).sum())
        ds, db = im.det_scores[dm], im.det_boxes[dm]
        if len(ds) == 0:
            continue
        order = np.argsort(-ds, kind="stable")
        ds, db = ds[order], db[order]
        iou = box_iou(db, gb) if len(gb) else np.zeros((len(ds), 0))
        taken = np.zeros(len(gb), bool)
        for k in range(len(ds)):
            cand = np.where(~taken & ~gi & (iou[k] >= thr), iou[k], -1.0)
            j = int(np.argmax(cand)) if len(gb) else -1
            if j >= 0 and cand[j] >= 0:
                taken[j] = True
                scores.append(ds[k]), tps.append(True)
            elif len(gb) and np.any(gi & (iou[k] >= thr)):
                continue  # matched an ignored object: not counted
            else:
                scores.append(ds[k]), tps.append(False)
    return np.asarray(scores, np.float64), np.asarray(tps, bool), n_gt


def average_precision(scores: np.ndarray, tps: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP from detection scores and true-positive flags."""
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(tps[order])
    fp = np.cumsum(~tps[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1e-9)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.mean(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)))


def mean_average_precision(images: list[ImageEval], num_classes: int) -> dict:
    """COCO-style metrics over `images`.

    Returns {"map50", "map50_95", "per_class": {cls: {"ap50", "ap50_95", "n_gt"}}}; classes without
    ground truth are left out of the means.
    """
    per_class = {}
    for cls in range(num_classes):
        aps = []
        n_gt = 0
        for thr in IOU_THRESHOLDS:
            s, t, n_gt = _match_class(images, cls, float(thr))
            aps.append(average_precision(s, t, n_gt))
        if n_gt:
            per_class[cls] = {"ap50": aps[0], "ap50_95": float(np.mean(aps)), "n_gt": n_gt}
    if not per_class:
        return {"map50": float("nan"), "map50_95": float("nan"), "per_class": {}}
    return {
        "map50": float(np.mean([c["ap50"] for c in per_class.values()])),
        "map50_95": float(np.mean([c["ap50_95"] for c in per_class.values()])),
        "per_class": per_class,
    }
