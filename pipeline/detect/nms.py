"""Class-aware batched NMS in numpy: the reference every other NMS (GPU) must match exactly.

Rules: boxes of different images or different classes never suppress each other; within one
(image, class) a box is dropped when its IoU with a kept, higher-ranked box is > iou_threshold;
rank is score descending, ties broken by lower index first.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.types import array_module


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    batch_idx: np.ndarray,
    iou_threshold: float,
    max_per_image: int,
) -> np.ndarray:
    """Indices (K,) int64 of the boxes kept, ordered by batch_idx, then score descending, then index.

    boxes (M, 4) float32 xyxy; scores (M,) float32; class_ids (M,) int32; batch_idx (M,) int32.
    At most `max_per_image` indices are kept per batch_idx (the highest ranked).
    """
    m = int(scores.shape[0])
    if m == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float32)
    group = batch_idx.astype(np.int64) * (int(class_ids.max()) + 1) + class_ids.astype(np.int64)
    order = np.lexsort((np.arange(m), -np.asarray(scores, np.float32), group))  # group, score desc, index
    grouped = group[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ends = np.r_[starts[1:], m]
    threshold = np.float32(iou_threshold)
    keep = np.concatenate([order[a:b] if b - a == 1 else _greedy(boxes, order[a:b], threshold, max_per_image)
                           for a, b in zip(starts, ends)])
    ranked = keep[np.lexsort((keep, -scores[keep], batch_idx[keep]))]
    return _cap_per_image(ranked, batch_idx, max_per_image)


def _greedy(boxes: np.ndarray, order: np.ndarray, iou_threshold: np.float32, limit: int) -> np.ndarray:
    """Greedy suppression over `order`, the ranked boxes of one (image, class) group. Returns kept (K,) int64,
    at most `limit`: a box kept after the group's first `limit` is ranked below `limit` boxes of its image, so the
    cap per image would drop it (a broken model's thousands of apart boxes stop here, not after all of them).

    IoU is computed in float32 as inter / (area_i + area_j - inter), area = (x2 - x1) * (y2 - y1).
    """
    x1, y1, x2, y2 = boxes[order].T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    alive = np.arange(order.size)
    keep = []
    while alive.size and len(keep) < limit:
        i, rest = alive[0], alive[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive = rest[iou <= iou_threshold]
    return order[np.asarray(keep, np.int64)]


def _cap_per_image(ranked: np.ndarray, batch_idx: np.ndarray, max_per_image: int) -> np.ndarray:
    """Keep the first `max_per_image` of each image in an already image-grouped index list."""
    if ranked.size == 0:
        return ranked
    images = batch_idx[ranked]
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
    position = np.arange(ranked.size) - np.repeat(starts, np.diff(np.r_[starts, ranked.size]))
    return ranked[position < max_per_image]


def candidates(boxes, scores, class_ids, conf_threshold: float, class_filter=None, max_candidates: int = 30000,
               images: int | None = None):
    """Flatten (B, N, ...) head outputs to the candidates above `conf_threshold`.

    boxes (B, N, 4), scores (B, N), class_ids (B, N); class_filter: class ids to keep (array) or None;
    images: only the first `images` rows are pictures (the rest pads a batch up to the engine's size).
    Returns boxes (M, 4) float32, scores (M,) float32, class_ids (M,) int32, batch_idx (M,) int32, with at
    most `max_candidates` per image (the highest scores), so a degenerate model cannot stall NMS.
    """
    xp = array_module(scores)
    mask = scores >= conf_threshold
    if class_filter is not None:
        mask &= xp.isin(class_ids, xp.asarray(class_filter))
    if images is not None:  # a broadcast compare, not `mask[images:] = False`: same shapes every batch
        mask &= xp.arange(mask.shape[0])[:, None] < images
    b, n = xp.nonzero(mask)
    if n.size and scores.shape[1] > max_candidates:
        b, n = _top_per_image(scores, b, n, max_candidates)
    return (
        boxes[b, n].astype(np.float32, copy=False),
        scores[b, n].astype(np.float32, copy=False),
        class_ids[b, n].astype(np.int32, copy=False),
        b.astype(np.int32),
    )


def _top_per_image(scores, b, n, limit: int):
    """Of the candidate (b, n) pairs, only the `limit` highest-scored per image (rows sorted by b)."""
    xp = array_module(scores)
    picked = scores[b, n]
    order = xp.lexsort(xp.stack([-picked, b.astype(picked.dtype)]))  # a stacked key array works on cupy too
    b, n = b[order], n[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, bool), b[1:] != b[:-1]]))
    counts = xp.diff(xp.concatenate([starts, xp.asarray([b.size])]))
    position = xp.arange(b.size) - xp.repeat(starts, counts)
    keep = position < limit
    return b[keep], n[keep]


def top_k(scores: np.ndarray, batch_idx: np.ndarray, k: int) -> np.ndarray:
    """For heads without NMS: indices (K,) int64 of at most k per image, ordered like batched_nms."""
    if scores.shape[0] == 0:
        return np.zeros(0, np.int64)
    index = np.arange(scores.shape[0])
    ranked = index[np.lexsort((index, -scores, batch_idx))]
    return _cap_per_image(ranked.astype(np.int64), batch_idx, k)


UNUSABLE = ("boxes that are not finite", "scores above 1", "class ids without a name")
"""The kinds of candidate a broken or mismatched model gives, dropped before NMS on every path, in the
order of `unusable`'s masks and of a summary's counts."""


def unusable(boxes, scores, class_ids, num_classes: int | None = None) -> list[tuple[str, Any, Any]]:
    """(what, mask (M,) of the candidates it applies to, the values it is about) for each of `UNUSABLE`,
    over candidates as `candidates` returns them (numpy or cupy). num_classes None: any class id >= 0 has a
    name. A NaN score is never a candidate (it fails the confidence threshold)."""
    xp = array_module(scores)
    limit = np.iinfo(np.int32).max if num_classes is None else num_classes
    return [(UNUSABLE[0], ~xp.isfinite(boxes).all(axis=1), boxes),
            (UNUSABLE[1], ~(scores <= 1), scores),
            (UNUSABLE[2], (class_ids < 0) | (class_ids >= limit), class_ids)]


SUMMARY_WIDTH = 9
"""A summary row of unusable candidates: the count of each kind of `UNUSABLE`, then one example of each:
the box (4), the score, the class id. float32, so it travels in a result's one copy to the host."""


def unusable_summary(checks) -> Any:
    """`unusable`'s checks -> (1, SUMMARY_WIDTH) float32 summary (same array module), the examples being the
    first candidate of each kind (0 where there is none). No host sync: it can ride in a later copy."""
    (_, bad_box, boxes), (_, bad_score, scores), (_, bad_class, class_ids) = checks
    xp = array_module(scores)
    counts = xp.stack([m.sum() for m in (bad_box, bad_score, bad_class)]).astype(np.float32)
    if scores.shape[0] == 0:
        return xp.concatenate([counts, xp.zeros(SUMMARY_WIDTH - 3, np.float32)])[None]
    examples = (boxes[bad_box.argmax()], scores[bad_score.argmax()][None], class_ids[bad_class.argmax()][None])
    return xp.concatenate([counts, *(e.astype(np.float32) for e in examples)])[None]


def report_unusable(summary: np.ndarray, report) -> None:
    """Tell `report(what, count, example)` of each kind in host `summary` (k, SUMMARY_WIDTH) rows (one per
    image, or one per batch) that has any: the count over all rows, the example of the first row with one."""
    counts = summary[:, :3]
    if not counts.any():
        return
    for kind, what in enumerate(UNUSABLE):
        rows = np.flatnonzero(counts[:, kind] > 0)
        if rows.size:
            example = summary[rows[0], (slice(3, 7), 7, 8)[kind]]
            example = example.tolist() if kind == 0 else float(example) if kind == 1 else int(example)
            report(what, int(counts[:, kind].sum()), example)
