"""CPU preprocessing: letterbox or stretch resize into a preallocated (B, 3, H, W) float32 batch.

The model sees `model = source * scale + pad` (per axis for "stretch"); `to_source` is the exact
inverse, clipped to the frame. Resizing uses PyAV's swscale (bilinear), already a dependency.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

Align = Literal["center", "top_left"]
_local = threading.local()  # one swscale context cache per thread (a reformatter is not thread-safe)


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """How one model wants its input.

    width, height: model input size in pixels. resize: "letterbox" keeps the aspect ratio and pads
    (`align` "center" like Ultralytics, "top_left" like YOLOX which pads bottom/right only);
    "stretch" resizes each axis independently (DETR-style models). color: channel order the model
    expects. scale: pixel multiplier (1/255 or 1), applied before `(x - mean) / std`.
    """

    width: int
    height: int
    resize: Literal["letterbox", "stretch"] = "letterbox"
    align: Align = "center"
    color: Literal["rgb", "bgr"] = "rgb"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = 114


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a source image lands in the model input: model = source * (sx, sy) + (px, py)."""

    sx: float
    sy: float
    px: int
    py: int
    new_w: int
    new_h: int


def placement(src_w: int, src_h: int, spec: PreprocessSpec) -> Placement:
    """The resize and padding of a `src_w x src_h` image for `spec` (pixels)."""
    if spec.resize == "stretch":
        return Placement(spec.width / src_w, spec.height / src_h, 0, 0, spec.width, spec.height)
    r = min(spec.width / src_w, spec.height / src_h)
    new_w = min(spec.width, max(1, int(round(src_w * r))))
    new_h = min(spec.height, max(1, int(round(src_h * r))))
    if spec.align == "top_left":
        px = py = 0
    else:
        px, py = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    # The effective scale is what the resize really did per axis, so the inverse is exact.
    return Placement(new_w / src_w, new_h / src_h, px, py, new_w, new_h)


def resize(image, width: int, height: int, color: str = "rgb") -> np.ndarray:
    """(H, W, 3) uint8 RGB or an av.VideoFrame -> (height, width, 3) uint8 in `color` order, bilinear."""
    planes = resize_planes(image, width, height)
    order = (2, 1, 0) if color == "bgr" else (0, 1, 2)
    return np.stack([planes[i] for i in order], axis=-1)


def resize_planes(image, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, G, B) planes, each (height, width) uint8, of an RGB array or a decoded av.VideoFrame.

    One swscale pass converts the decoder's YUV (or RGB) and resizes at once; asking for planar
    output (gbrp) saves the HWC -> CHW transpose later.
    """
    frame = image if isinstance(image, av.VideoFrame) else av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    out = _reformatter().reformat(frame, width=width, height=height, format="gbrp", interpolation="BILINEAR")
    g, b, r = (np.frombuffer(p, np.uint8).reshape(height, p.line_size)[:, :width] for p in out.planes)
    return r, g, b


def image_size(image) -> tuple[int, int]:
    """(width, height) of an (H, W, 3) array or an av.VideoFrame."""
    if isinstance(image, av.VideoFrame):
        return image.width, image.height
    return image.shape[1], image.shape[0]


def _reformatter() -> VideoReformatter:
    """This thread's reformatter: it keeps the swscale context between calls of the same geometry."""
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter


def allocate(batch: int, spec: PreprocessSpec) -> np.ndarray:
    """A (batch, 3, height, width) float32 input buffer for `spec`."""
    return np.empty((batch, 3, spec.height, spec.width), np.float32)


def preprocess_into(images: list, spec: PreprocessSpec, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill rows 0..len(images)-1 of `out` (B, 3, H, W) float32 from (h, w, 3) uint8 RGB images
    or decoded av.VideoFrames.

    Returns `scale (n, 2) float32` (sx, sy; equal for letterbox) and `pad (n, 2) float32` (x, y)
    such that `model = source * scale + pad`.
    """
    n = len(images)
    if n > out.shape[0]:
        raise ValueError(f"batch of {n} images does not fit the input buffer of {out.shape[0]} rows")
    scale = np.empty((n, 2), np.float32)
    pad = np.empty((n, 2), np.float32)
    pad_level = _normalise_constant(spec)
    order = (2, 1, 0) if spec.color == "bgr" else (0, 1, 2)
    for row, image in enumerate(images):
        p = placement(*image_size(image), spec)
        planes = resize_planes(image, p.new_w, p.new_h)
        target = out[row]
        if p.new_w != spec.width or p.new_h != spec.height:
            target[...] = pad_level[:, None, None]
        view = target[:, p.py : p.py + p.new_h, p.px : p.px + p.new_w]
        _normalise([planes[i] for i in order], spec, view)
        scale[row] = (p.sx, p.sy)
        pad[row] = (p.px, p.py)
    return scale, pad


def _normalise(planes: list[np.ndarray], spec: PreprocessSpec, view: np.ndarray) -> None:
    """Three (h, w) uint8 planes in model channel order -> CHW float32 into `view`, applying scale, mean and std."""
    for channel, plane in enumerate(planes):
        np.multiply(plane, np.float32(spec.scale), out=view[channel], casting="unsafe")
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        view -= np.asarray(spec.mean, np.float32)[:, None, None]
        view /= np.asarray(spec.std, np.float32)[:, None, None]


def _normalise_constant(spec: PreprocessSpec) -> np.ndarray:
    """The (3,) float32 value a pad pixel has after normalisation."""
    level = np.full(3, spec.pad_value * spec.scale, np.float32)
    return (level - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def to_source(xyxy: np.ndarray, scale: np.ndarray, pad: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Model-input xyxy (N, 4) -> source pixels, the inverse of `preprocess_into`.

    scale, pad: (N, 2) float32 rows per box (or (2,) for all); size: (width, height) of the source
    frame to clip to, or None. Returns a new (N, 4) float32 array.
    """
    scale4 = np.tile(np.asarray(scale, np.float32).reshape(-1, 2), 2)
    pad4 = np.tile(np.asarray(pad, np.float32).reshape(-1, 2), 2)
    out = (np.asarray(xyxy, np.float32) - pad4) / scale4
    if size is not None:
        clip_boxes(out, size)
    return out.astype(np.float32, copy=False)


def clip_boxes(xyxy: np.ndarray, size) -> np.ndarray:
    """Clip (N, 4) xyxy in place to [0, width] x [0, height]; `size` is (w, h) or (N, 2) per box."""
    wh = np.asarray(size, np.float32).reshape(-1, 2)
    np.clip(xyxy[:, 0::2], 0, wh[:, :1], out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, wh[:, 1:], out=xyxy[:, 1::2])
    return xyxy
