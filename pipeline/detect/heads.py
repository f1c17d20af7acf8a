"""Model output adapters: every head becomes boxes (B, N, 4) xyxy, scores (B, N), class ids (B, N).

Heads: Ultralytics v8/11 `[B, 4+nc, N]`, YOLOv5 `[B, N, 5+nc]`, YOLOX raw `[B, N, 5+nc]` (grid
decode), end-to-end `[B, K, 6]` (YOLOv10/YOLO26), Ultralytics RT-DETR `[B, K, 6]` (normalised cx, cy,
w, h) and DETR-style (`labels`, `boxes`, `scores`). Which one a file has: `pipeline.detect.recognize`.
Decoders pick `xp = array_module(a)`, so the same code runs on numpy and cupy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from pipeline.errors import ConfigError
from pipeline.types import array_module

HeadName = Literal["ultralytics", "yolov5", "yolox", "end2end", "rtdetr", "detr"]
HEADS: tuple[str, ...] = get_args(HeadName)
STRIDES = (8, 16, 32)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One model input or output: name, shape (ints, or str/None for symbolic dims), element type."""

    name: str
    shape: tuple[Any, ...]
    dtype: str = "tensor(float)"


@dataclass(frozen=True, slots=True)
class ModelSignature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(slots=True)
class HeadOutput:
    """Decoded candidates of a batch, before the confidence filter.

    boxes (B, N, 4) float32 xyxy, in model-input pixels (`in_source=False`) or already in source
    pixels (`in_source=True`, DETR-style); scores (B, N) float32; class_ids (B, N) int32.
    needs_nms: False for end-to-end heads whose outputs are already final.
    """

    boxes: Any
    scores: Any
    class_ids: Any
    in_source: bool = False
    needs_nms: bool = True


def grid_points(width: int, height: int, strides=STRIDES) -> int:
    """Anchor points an anchor-free head has for a `width x height` input."""
    return sum((width // s) * (height // s) for s in strides)


def preprocess_defaults(head: str) -> dict:
    """The input convention each head family was trained with (resize, align, color, scale)."""
    if head == "yolox":
        return dict(resize="letterbox", align="top_left", color="bgr", scale=1.0)
    if head in ("detr", "rtdetr"):
        return dict(resize="stretch", align="top_left", color="rgb", scale=1 / 255)
    return dict(resize="letterbox", align="center", color="rgb", scale=1 / 255)


def decode(head: str, outputs: dict[str, Any], input_wh: tuple[int, int], min_score: float = 0.0) -> HeadOutput:
    """Raw engine outputs (by name) of one batch -> HeadOutput. input_wh: model input (w, h) pixels.

    min_score: scores below it may be reported as 0 (heads with objectness skip the class search
    for points whose objectness is already below it; the result above `min_score` is unchanged).
    Values a broken model gives (inf, nan, exp overflow) pass through as inf/nan without warnings;
    `detector.postprocess` drops such boxes.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _decode(head, outputs, input_wh, min_score)


def _decode(head: str, outputs: dict[str, Any], input_wh: tuple[int, int], min_score: float) -> HeadOutput:
    if head == "detr":
        return decode_detr(outputs["labels"], outputs["boxes"], outputs["scores"])
    raw = _first(outputs)
    if head == "ultralytics":
        return decode_ultralytics(raw)
    if head == "yolov5":
        return decode_yolov5(raw, min_score)
    if head == "yolox":
        return decode_yolox(raw, input_wh, min_score)
    if head == "end2end":
        return decode_end2end(raw)
    if head == "rtdetr":
        return decode_rtdetr(raw, input_wh)
    raise ConfigError(f"detector.head '{head}' is unknown; use one of {list(HEADS)}")


def _first(outputs: dict[str, Any]):
    return next(iter(outputs.values()))


def cxcywh_to_xyxy(cxcywh):
    """(..., 4) centre/size -> (..., 4) corners, same array module and dtype."""
    xp = array_module(cxcywh)
    half = cxcywh[..., 2:4] / 2
    return xp.concatenate([cxcywh[..., 0:2] - half, cxcywh[..., 0:2] + half], axis=-1)


def _best_class(class_scores, axis: int = -1, objectness=None, min_score: float = 0.0):
    """Best class score (B, N) float32 and its class (B, N) int32 along the class `axis` of a (B, ...) array.

    With `objectness` (B, N) >= 0 the score is obj * cls; the best class of obj * cls is the best
    class of cls, so the product is taken on the winners only (80x less work than on every class),
    and on the host only points with obj >= min_score are searched (cls <= 1, so no others can pass).
    """
    xp = array_module(class_scores)
    if objectness is not None and min_score > 0 and xp is np:
        keep = objectness >= min_score
        scores = np.zeros(objectness.shape, np.float32)
        class_ids = np.zeros(objectness.shape, np.int32)
        if keep.any():
            kept_scores, kept_ids = _best_class(class_scores[keep], axis=-1, objectness=objectness[keep])
            scores[keep], class_ids[keep] = kept_scores, kept_ids
        return scores, class_ids
    class_ids = class_scores.argmax(axis=axis)
    scores = class_scores.max(axis=axis)  # the value at argmax, in one reduction (fewer GPU launches)
    if objectness is not None:
        scores = scores * objectness
    return scores.astype(np.float32), class_ids.astype(np.int32)


def decode_ultralytics(raw) -> HeadOutput:
    """[B, 4+nc, N] (cx, cy, w, h, class scores) in input pixels."""
    scores, class_ids = _best_class(raw[:, 4:, :], axis=1)
    return HeadOutput(cxcywh_to_xyxy(raw[:, :4, :].transpose(0, 2, 1)).astype(np.float32), scores, class_ids)


def decode_yolov5(raw, min_score: float = 0.0) -> HeadOutput:
    """[B, N, 5+nc] (cx, cy, w, h, objectness, class scores); score = obj * cls."""
    scores, class_ids = _best_class(raw[..., 5:], objectness=raw[..., 4], min_score=min_score)
    return HeadOutput(cxcywh_to_xyxy(raw[..., :4]).astype(np.float32), scores, class_ids)


def yolox_grid(width: int, height: int, xp=np, strides=STRIDES):
    """Grid (N, 2) float32 (x, y cell index) and stride (N, 1) float32 of a YOLOX head, row-major per stride.

    Cached (read-only arrays): on the GPU, building it is a dozen kernel launches per batch otherwise."""
    device = None if xp is np else xp.cuda.Device().id
    return _yolox_grid(width, height, xp, tuple(strides), device)


@functools.lru_cache(maxsize=16)
def _yolox_grid(width: int, height: int, xp, strides: tuple[int, ...], device: int | None):
    grids, step = [], []
    for s in strides:
        h, w = height // s, width // s
        ys, xs = xp.meshgrid(xp.arange(h, dtype=np.float32), xp.arange(w, dtype=np.float32), indexing="ij")
        grids.append(xp.stack([xs.ravel(), ys.ravel()], axis=1))
        step.append(xp.full((h * w, 1), s, np.float32))
    return xp.concatenate(grids), xp.concatenate(step)


def yolox_grid_for(points: int, input_wh: tuple[int, int], xp=np):
    """`yolox_grid` of the input size, or ConfigError when it does not have `points` points (the model's)."""
    grid, stride = yolox_grid(*input_wh, xp=xp)
    if grid.shape[0] != points:
        raise ConfigError(
            f"YOLOX output has {points} points but a {input_wh[0]}x{input_wh[1]} input gives "
            f"{grid.shape[0]}; check detector.input_size or detector.head"
        )
    return grid, stride


def decode_yolox(raw, input_wh: tuple[int, int], min_score: float = 0.0) -> HeadOutput:
    """Raw YOLOX [B, N, 5+nc]: xy = (xy + grid) * stride, wh = exp(wh) * stride; obj, cls already sigmoid."""
    xp = array_module(raw)
    grid, stride = yolox_grid_for(raw.shape[1], input_wh, xp)
    scores, class_ids = _best_class(raw[..., 5:], objectness=raw[..., 4], min_score=min_score)
    if xp is np and min_score > 0:  # boxes only where a score can pass; the others stay 0 (never used)
        rows, points = np.nonzero(scores >= min_score)
        boxes = np.zeros((*raw.shape[:2], 4), np.float32)
        boxes[rows, points] = _yolox_boxes(raw[rows, points], grid[points], stride[points], xp)
        return HeadOutput(boxes, scores, class_ids)
    return HeadOutput(_yolox_boxes(raw, grid, stride, xp), scores, class_ids)


def _yolox_boxes(raw, grid, stride, xp):
    xy = (raw[..., 0:2] + grid) * stride
    wh = xp.exp(raw[..., 2:4]) * stride
    return cxcywh_to_xyxy(xp.concatenate([xy, wh], axis=-1)).astype(np.float32)


def class_ids_of(values):
    """A model's class column (any dtype) -> int32 class ids; -1 where it holds no class (not a finite
    number, or beyond int32), never a wrapped or undefined value."""
    xp = array_module(values)
    if values.dtype.kind in "iu":
        fits = (values >= 0) & (values <= np.iinfo(np.int32).max)
    else:
        fits = xp.isfinite(values) & (values >= 0) & (values < 2.0**31)
    return xp.where(fits, values, -1).astype(np.int32)


def decode_end2end(raw) -> HeadOutput:
    """[B, K, 6] (x1, y1, x2, y2, score, class) in input pixels; already final, no NMS."""
    return HeadOutput(
        raw[..., :4].astype(np.float32),
        raw[..., 4].astype(np.float32),
        class_ids_of(raw[..., 5]),
        needs_nms=False,
    )


def decode_detr(labels, boxes, scores) -> HeadOutput:
    """DETR-style labels (B, K) int, boxes (B, K, 4) xyxy in source pixels, scores (B, K); no NMS."""
    return HeadOutput(
        boxes.astype(np.float32), scores.astype(np.float32), class_ids_of(labels), in_source=True, needs_nms=False
    )


def decode_rtdetr(raw, input_wh: tuple[int, int]) -> HeadOutput:
    """Ultralytics RT-DETR [B, K, 6]: (cx, cy, w, h) as fractions of the input, score, class; boxes out in
    input pixels; already final, no NMS."""
    xp = array_module(raw)
    width, height = input_wh
    boxes = cxcywh_to_xyxy(raw[..., :4]) * xp.asarray([width, height, width, height], np.float32)
    return HeadOutput(
        boxes.astype(np.float32), raw[..., 4].astype(np.float32), class_ids_of(raw[..., 5]), needs_nms=False
    )
