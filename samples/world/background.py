"""Static background of a viewpoint (facades, sidewalks, road, plaza, clutter) and its lighting bank.

Painted once per (viewpoint, seed, size) in float32, then cached as uint8 copies at a few
lighting levels with sensor noise baked in, so a frame starts as one memcpy.
"""
from __future__ import annotations

import numpy as np

from samples.world.layout import Viewpoint

N_LIGHT_LEVELS = 12
LIGHT_RANGE = (0.55, 1.3)
N_NOISE_VARIANTS = 2


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(h, w) float32 value noise in [-1, 1] with features about `cell` pixels wide."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _band(img, v0, v1, colour, h) -> tuple[int, int]:
    y0, y1 = int(round(v0 * h)), int(round(v1 * h))
    img[y0:y1] = colour
    return y0, y1


def _facades(img: np.ndarray, rng: np.random.Generator, y1: int) -> None:
    h, w = img.shape[:2]
    x = 0
    while x < w:
        bw = int(rng.integers(max(w // 10, 8), max(w // 4, 9)))
        top = int(rng.integers(0, max(y1 // 3, 1)))
        img[:top, x : x + bw] = rng.uniform(120, 200, 3) * np.array([0.8, 0.9, 1.05])  # sky
        img[top:y1, x : x + bw] = rng.uniform(40, 220, 3)
        win = rng.uniform(20, 120, 3)
        step_x, step_y = max(bw // 5, 3), max(h // 18, 3)
        for wy in range(top + step_y // 2, y1 - step_y, step_y):
            for wx in range(x + step_x // 2, x + bw - step_x // 2, step_x):
                img[wy : wy + step_y // 2, wx : wx + max(step_x // 2, 1)] = win * rng.uniform(0.7, 1.4)
        x += bw


def _tiles(img: np.ndarray, y0: int, y1: int, cell: int, colour) -> None:
    img[y0:y1] = colour
    ys = np.arange(y0, y1)
    img[ys[ys % cell == 0]] *= 0.75
    img[y0:y1, ::cell] *= 0.75


def _road(img: np.ndarray, view: Viewpoint, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    y0, y1 = _band(img, *view.road, rng.uniform(60, 110) * np.ones(3), h)
    mid = (y0 + y1) // 2
    thick = max(h // 180, 1)
    dash = max(w // 24, 4)
    for x in range(0, w, 2 * dash):
        img[mid - thick : mid + thick, x : x + dash] = (220, 220, 200)
    img[y0 + thick : y0 + 2 * thick] = (200, 200, 200)
    img[y1 - 2 * thick : y1 - thick] = (200, 200, 200)
    if view.crosswalk_u is not None:
        cx, half = int(view.crosswalk_u * w), max(w // 25, 3)
        stripe = max((y1 - y0) // 14, 2)
        for y in range(y0 + stripe, y1 - stripe, 2 * stripe):
            img[y : y + stripe, cx - half : cx + half] = (225, 225, 225)


def _clutter(img: np.ndarray, view: Viewpoint, rng: np.random.Generator) -> None:
    """Poles, bins, benches and shrubs: distractor shapes that are not objects of any class."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(5, 10))):
        v = rng.uniform(view.sidewalks[0][0], 1.0)
        if view.road[0] <= v <= view.road[1]:
            continue
        y, x = int(v * h), int(rng.uniform(0, w))
        size = max(int(h * 0.04 * (v + 0.7)), 3)
        kind = rng.integers(3)
        colour = rng.uniform(20, 200, 3)
        if kind == 0:  # pole
            img[max(y - 4 * size, 0) : y, x : x + max(size // 5, 1)] = colour
        elif kind == 1:  # bench / bin
            img[max(y - size, 0) : y, x : x + 2 * size] = colour
        else:  # shrub
            yy, xx = np.ogrid[:h, :w]
            img[((yy - y + size) ** 2 + ((xx - x) * 0.7) ** 2) < size * size] = (40, 90 + 60 * rng.random(), 40)


def paint_background(view: Viewpoint, seed: int, size: tuple[int, int]) -> np.ndarray:
    """The static scene at full light: (H, W, 3) float32 RGB in 0..255."""
    w, h = size
    rng = np.random.default_rng([seed, 7])
    img = np.zeros((h, w, 3), np.float32)
    ground = rng.uniform(90, 190, 3)
    img[:] = ground
    _tiles(img, 0, h, max(h // int(rng.integers(12, 30)), 3), ground)
    y1 = int(view.buildings_v * h)
    _facades(img, rng, y1)
    for band in view.sidewalks:
        y0, yb = int(band[0] * h), int(band[1] * h)
        _tiles(img, y0, yb, max(h // int(rng.integers(20, 40)), 2), rng.uniform(120, 210) * np.ones(3))
    _road(img, view, rng)
    _clutter(img, view, rng)
    texture = _smooth_noise(rng, h, w, max(h // 40, 2)) * 10 + _smooth_noise(rng, h, w, max(h // 6, 2)) * 18
    img += texture[..., None]
    return np.clip(img, 0, 255)


class LightingBank:
    """Backgrounds at `N_LIGHT_LEVELS` gains x `N_NOISE_VARIANTS` noise draws, built lazily (uint8).

    Also holds a bank of int16 sensor noise used on pasted objects so they carry the same grain.
    """

    def __init__(self, base: np.ndarray, seed: int, noise_sigma: float = 4.0):
        self.base = base
        self.h, self.w = base.shape[:2]
        self._rng = np.random.default_rng([seed, 11])
        self._tint = self._rng.uniform(0.93, 1.07, (N_LIGHT_LEVELS, 3)).astype(np.float32)
        self._noise = [self._rng.normal(0, noise_sigma, base.shape).astype(np.int16) for _ in range(N_NOISE_VARIANTS)]
        self.grain = self._rng.normal(0, noise_sigma, base.shape).astype(np.int16)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    @staticmethod
    def gain(level: int) -> float:
        lo, hi = LIGHT_RANGE
        return lo + (hi - lo) * level / (N_LIGHT_LEVELS - 1)

    def background(self, level: int, variant: int) -> np.ndarray:
        key = (level, variant % N_NOISE_VARIANTS)
        img = self._cache.get(key)
        if img is None:
            lit = self.base * (self.gain(level) * self._tint[level]) + self._noise[key[1]]
            img = self._cache[key] = np.clip(lit, 0, 255).astype(np.uint8)
        return img
