"""The renderer: `World(scene, seed, size, fps).render(index)` -> frame and its exact ground truth.

Frames are a pure function of (scene, seed, size, fps, index): rendering frame 500 does not need
frames 0..499, and the same arguments always give the same pixels and boxes.
Cost at 640x360 is one background copy, one label-buffer fill, and a small paste per object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samples.world.background import (
    LIGHT_RANGE,
    N_LIGHT_LEVELS,
    LightingBank,
    paint_background,
)
from samples.world.layout import get_viewpoint
from samples.world.sprites import N_PHASES, draw_sprite
from samples.world.traffic import STRIDE_M, Traffic, WorldObject, scale_px

MIN_BOX_PX = 2  # objects smaller than this are not drawn and not in the ground truth


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One object in one frame, in source pixels.

    `box` (x0, y0, x1, y1) is the visible extent clipped to the frame; `full_box` the whole object
    (may extend past the frame); `visibility` = visible pixels / all pixels of the object (occlusion and
    truncation by the frame edge both count); `anchor` = bottom-centre of `full_box`.
    """

    track_id: int
    class_id: int
    box: tuple[float, float, float, float]
    full_box: tuple[float, float, float, float]
    visibility: float

    @property
    def anchor(self) -> tuple[float, float]:
        return ((self.full_box[0] + self.full_box[2]) / 2, self.full_box[3])


@dataclass(slots=True)
class _Placed:
    obj: WorldObject
    depth: tuple[float, int]
    x0: int
    y0: int
    mask: np.ndarray
    rgb: np.ndarray


def object_extent(obj: WorldObject, t: float, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Where `obj` is drawn at time t: (x0, y0, w, h) pixels of its whole sprite, None when off frame or tiny."""
    width, height = size
    u, v = obj.anchor(t)
    s = float(scale_px(v, height))
    h, w = int(round(obj.height_m * s)), int(round(obj.width_m * s))
    if h < MIN_BOX_PX or w < MIN_BOX_PX:
        return None
    x0 = int(round(u * width - w / 2))
    y0 = int(round(v * height - obj.lift_m * s)) - h
    if x0 >= width or y0 >= height or x0 + w <= 0 or y0 + h <= 0:
        return None
    return x0, y0, w, h


class World:
    """A seeded camera scene. `size` = (width, height) pixels, `fps` frames per second (time = index / fps).

    Holds its background bank (up to ~100 MB at 1280x720, ~25 MB at 640x360, filled as lighting changes) and a label
    buffer: use one World per thread.
    """

    def __init__(self, scene: str = "plaza", seed: int = 0, size: tuple[int, int] = (640, 360), fps: float = 15.0):
        if size[0] < 32 or size[1] < 32:
            raise ValueError(f"synthetic world size {size[0]}x{size[1]} is too small; use at least 32x32")
        self.view = get_viewpoint(scene)
        self.scene, self.seed, self.size, self.fps = scene, int(seed), (int(size[0]), int(size[1])), float(fps)
        self.width, self.height = self.size
        self.traffic = Traffic(self.view, self.seed, self.width / self.height)
        self._bank = LightingBank(paint_background(self.view, self.seed, self.size), self.seed)
        rng = np.random.default_rng([self.seed, 5])
        self._light = (rng.uniform(0.75, 1.1), rng.uniform(0.1, 0.25), rng.uniform(40, 120), rng.uniform(0, 6.3))
        self._label = np.zeros((self.height, self.width), np.int16)

    def time_of(self, index: int) -> float:
        return index / self.fps

    def light_level(self, index: int) -> int:
        """Lighting bank level of frame `index`: a slow daylight swing plus a faster cloud term."""
        base, amp, period, phase = self._light
        t = self.time_of(index)
        gain = base + amp * np.sin(2 * np.pi * t / period + phase) + 0.06 * np.sin(2 * np.pi * t / 13.0 + phase * 2)
        lo, hi = LIGHT_RANGE
        return int(np.clip(round((gain - lo) / (hi - lo) * (N_LIGHT_LEVELS - 1)), 0, N_LIGHT_LEVELS - 1))

    def render(self, index: int) -> tuple[np.ndarray, list[GroundTruth]]:
        """Frame `index`: (image (H, W, 3) uint8 RGB, a fresh array) and its ground truth, far objects first."""
        level = self.light_level(index)
        img = self._bank.background(level, index).copy()
        placed = sorted(self._place(self.time_of(index)), key=lambda p: p.depth)
        gain = int(round(LightingBank.gain(level) * 256))
        self._label.fill(0)
        for k, p in enumerate(placed, start=1):
            self._paste(img, p, gain, k)
        return img, [gt for k, p in enumerate(placed, start=1) if (gt := self._truth(p, k)) is not None]

    def ground_truth(self, index: int) -> list[GroundTruth]:
        """The ground truth of frame `index` (renders it: occlusion needs the pixels)."""
        return self.render(index)[1]

    def _place(self, t: float) -> list[_Placed]:
        out = []
        for obj in self.traffic.active(t):
            extent = object_extent(obj, t, self.size)
            if extent is None:
                continue
            x0, y0, w, h = extent
            mask, rgb = self._sprite(obj, h, w, t)
            out.append(_Placed(obj, (float(obj.anchor(t)[1]), obj.draw_after), x0, y0, mask, rgb))
        return out

    def _sprite(self, obj: WorldObject, h: int, w: int, t: float):
        phase = 0
        if obj.class_id in (0, 1):  # people and bicycles are animated
            phase = int(np.interp(t, obj.key_t, obj.key_d) / STRIDE_M) % N_PHASES
        key = (h, w, phase)
        sprite = obj.sprites.get(key)
        if sprite is None:
            if len(obj.sprites) > 64:
                obj.sprites.clear()
            sprite = obj.sprites[key] = draw_sprite(obj.class_id, obj.style, h, w, phase, obj.facing_left())
        return sprite

    def _clip(self, p: _Placed):
        h, w = p.mask.shape
        fy0, fx0 = max(p.y0, 0), max(p.x0, 0)
        fy1, fx1 = min(p.y0 + h, self.height), min(p.x0 + w, self.width)
        sprite_sl = (slice(fy0 - p.y0, fy1 - p.y0), slice(fx0 - p.x0, fx1 - p.x0))
        return (slice(fy0, fy1), slice(fx0, fx1)), sprite_sl

    def _paste(self, img: np.ndarray, p: _Placed, gain: int, label: int) -> None:
        frame_sl, sprite_sl = self._clip(p)
        mask = p.mask[sprite_sl]
        lit = (p.rgb[sprite_sl].astype(np.int16) * gain >> 8) + self._bank.grain[frame_sl]
        np.copyto(img[frame_sl], np.clip(lit, 0, 255).astype(np.uint8), where=mask[..., None])
        self._label[frame_sl][mask] = label

    def _truth(self, p: _Placed, label: int) -> GroundTruth | None:
        frame_sl, sprite_sl = self._clip(p)
        visible = (self._label[frame_sl] == label) & p.mask[sprite_sl]
        n_visible = int(np.count_nonzero(visible))
        if n_visible == 0:
            return None
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        ys, xs = frame_sl[0].start, frame_sl[1].start
        box = (float(xs + cols[0]), float(ys + rows[0]), float(xs + cols[-1] + 1), float(ys + rows[-1] + 1))
        h, w = p.mask.shape
        full = (float(p.x0), float(p.y0), float(p.x0 + w), float(p.y0 + h))
        vis = n_visible / max(int(np.count_nonzero(p.mask)), 1)
        return GroundTruth(p.obj.oid, p.obj.class_id, box, full, round(vis, 4))
