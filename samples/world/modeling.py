"""What the demo detector is trained and judged on: letterboxed frames, labels, decode and NMS.

Kept free of torch so tests and the model card evaluation run with numpy and ONNX Runtime only.
The letterbox matches Ultralytics (centred, pad 114); resizing is a separable triangle filter whose
support widens when shrinking (anti-aliased bilinear, close to swscale's BILINEAR).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samples.world.metrics import ImageEval
from samples.world.render import GroundTruth

MIN_VISIBILITY = 0.35  # below this an object is "ignore": neither required nor penalised
MIN_HEIGHT_PX = 6.0  # in model input pixels
PAD_VALUE = 114


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (n_out, K) and weights (n_out, K) float32 of an anti-aliased linear filter."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    first = np.floor(centres - support).astype(int)
    idx = first[:, None] + np.arange(int(np.ceil(2 * support)) + 2)[None, :]
    w = np.clip(1 - np.abs(idx + 0.5 - centres[:, None]) / support, 0, None)
    w[(idx < 0) | (idx >= n_in)] = 0
    return np.clip(idx, 0, n_in - 1), (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _resample_rows(a: np.ndarray, n_out: int) -> np.ndarray:
    idx, w = _taps(a.shape[0], n_out)
    out = np.zeros((n_out, *a.shape[1:]), np.float32)
    for k in range(idx.shape[1]):
        out += a[idx[:, k]] * w[:, k].reshape(-1, *([1] * (a.ndim - 1)))
    return out


def resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8."""
    rows = _resample_rows(image.astype(np.float32), height)
    out = _resample_rows(rows.transpose(1, 0, 2), width).transpose(1, 0, 2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Letterbox:
    """model = source * scale + pad (pad = (x, y) pixels)."""

    scale: float
    pad: tuple[int, int]


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8 centred in pad 114, and its placement."""
    h, w = image.shape[:2]
    r = min(size / w, size / h)
    nw, nh = min(size, int(round(w * r))), min(size, int(round(h * r)))
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    out[py : py + nh, px : px + nw] = resize_bilinear(image, nw, nh)
    return out, Letterbox(nw / w, (px, py))


def labels(truth: list[GroundTruth], box: Letterbox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth mapped into model pixels: boxes (M, 4) float32, classes (M,) int64, ignore (M,) bool."""
    if not truth:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    boxes = np.asarray([t.box for t in truth], np.float32) * box.scale
    boxes[:, [0, 2]] += box.pad[0]
    boxes[:, [1, 3]] += box.pad[1]
    classes = np.asarray([t.class_id for t in truth], np.int64)
    vis = np.asarray([t.visibility for t in truth], np.float32)
    ignore = (vis < MIN_VISIBILITY) | (boxes[:, 3] - boxes[:, 1] < MIN_HEIGHT_PX)
    return boxes, classes, ignore


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on (N, 4) xyxy; returns kept indices by descending score."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def decode_ultralytics(output: np.ndarray, conf: float = 0.001, iou: float = 0.45, max_det: int = 300):
    """One image's [4+nc, N] output -> (boxes (K, 4) xyxy model px, scores (K,), classes (K,)).

    Every (box, class) pair above `conf` is a candidate (multi-label), then class-aware NMS.
    """
    cxcywh, cls = output[:4].T, output[4:].T
    rows, classes = np.nonzero(cls > conf)
    scores = cls[rows, classes]
    if len(scores) > 10 * max_det:
        top = np.argsort(-scores)[: 10 * max_det]
        rows, classes, scores = rows[top], classes[top], scores[top]
    c = cxcywh[rows]
    boxes = np.concatenate([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], axis=1)
    keep = nms(boxes + classes[:, None] * 4096.0, scores, iou)[:max_det]
    return boxes[keep], scores[keep], classes[keep]


def evaluate_onnx(model_path, frames: list[tuple[np.ndarray, list[GroundTruth]]], batch: int = 8) -> list[ImageEval]:
    """Run an Ultralytics-layout ONNX model on rendered frames; returns per-image evaluation records."""
    import onnxruntime as ort  # noqa: PLC0415 - only needed here

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    size = sess.get_inputs()[0].shape[2]
    records = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        boxed = [letterbox(img, size) for img, _ in chunk]
        x = np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2).astype(np.float32) / 255
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        for row, ((_, truth), (_, lb)) in enumerate(zip(chunk, boxed)):
            db, ds, dc = decode_ultralytics(out[row])
            gb, gc, gi = labels(truth, lb)
            records.append(ImageEval(db, ds, dc, gb, gc, gi))
    return records
