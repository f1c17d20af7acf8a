"""Procedural side-view sprites of the five classes, drawn at any pixel size with numpy.

A sprite is `(mask (h, w) bool, rgb (h, w, 3) uint8)`; pixels outside the mask are transparent
(wheels and gaps show the background, so a detector must learn outlines, not filled rectangles).
`Style` holds one instance's colours and proportions; colours are drawn widely so shape, not colour,
identifies the class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samples.world.layout import BICYCLE, BUS, CAR, PERSON, TRUCK

# (height m, width m) before the per-instance jitter
SIZES_M = {PERSON: (1.72, 0.55), BICYCLE: (1.05, 1.75), CAR: (1.5, 4.4), BUS: (3.1, 11.5), TRUCK: (3.4, 8.0)}
N_PHASES = 6  # walking / pedalling animation steps


@dataclass(frozen=True)
class Style:
    """Colours (RGB uint8 triples) and shape jitter of one object instance."""

    main: tuple[int, int, int]
    second: tuple[int, int, int]
    third: tuple[int, int, int]
    skin: tuple[int, int, int]
    shape: float  # 0..1, varies proportions (e.g. car roof length, truck cab)


def random_style(rng: np.random.Generator) -> Style:
    """Widely varied colours: anything from black to white, saturated or grey."""

    def colour() -> tuple[int, int, int]:
        if rng.random() < 0.3:  # greys, black, white are common for vehicles and clothes
            g = int(rng.integers(15, 245))
            return (g, g, g)
        return tuple(int(c) for c in rng.integers(10, 250, size=3))

    skins = ((241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 30))
    return Style(colour(), colour(), colour(), skins[int(rng.integers(len(skins)))], float(rng.random()))


class _Canvas:
    """Pixel grid of one sprite; primitives are given in fractions of width (x) and height (y)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        self.mask = np.zeros((h, w), bool)
        self.rgb = np.zeros((h, w, 3), np.uint8)

    def paint(self, m: np.ndarray, colour) -> None:
        self.mask |= m
        self.rgb[m] = colour

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xx >= x0 * self.w) & (self.xx < x1 * self.w) & (self.yy >= y0 * self.h) & (self.yy < y1 * self.h)

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.xx - cx * self.w) / (rx * self.w)) ** 2 + ((self.yy - cy * self.h) / (ry * self.h)) ** 2 <= 1

    def disc(self, cx, cy, r_h) -> np.ndarray:
        """Circle of radius r_h * height, centred at fractions (cx, cy)."""
        return (self.xx - cx * self.w) ** 2 + (self.yy - cy * self.h) ** 2 <= (r_h * self.h) ** 2

    def capsule(self, p0, p1, r_h) -> np.ndarray:
        """Thick segment from p0 to p1 (fractions), radius r_h * height (at least half a pixel)."""
        ax, ay, bx, by = p0[0] * self.w, p0[1] * self.h, p1[0] * self.w, p1[1] * self.h
        dx, dy = bx - ax, by - ay
        t = np.clip(((self.xx - ax) * dx + (self.yy - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        r = max(r_h * self.h, 0.6)
        return (self.xx - ax - t * dx) ** 2 + (self.yy - ay - t * dy) ** 2 <= r * r


def _person(c: _Canvas, s: Style, phase: int) -> None:
    swing = np.sin(2 * np.pi * phase / N_PHASES) * 0.28
    c.paint(c.capsule((0.5, 0.55), (0.5 + swing, 0.97), 0.045), s.second)  # legs
    c.paint(c.capsule((0.5, 0.55), (0.5 - swing, 0.97), 0.045), tuple(int(v * 0.8) for v in s.second))
    c.paint(c.capsule((0.5, 0.22), (0.5 - swing * 0.8, 0.52), 0.032), s.main)  # arms
    c.paint(c.capsule((0.5, 0.22), (0.5 + swing * 0.8, 0.52), 0.032), s.main)
    c.paint(c.ellipse(0.5, 0.38, 0.30, 0.2), s.main)  # torso
    c.paint(c.disc(0.5, 0.09, 0.075), s.skin)  # head
    if s.shape > 0.5:
        c.paint(c.ellipse(0.5, 0.05, 0.22, 0.05), s.third)  # hair or cap


def _bicycle(c: _Canvas, s: Style, phase: int) -> None:
    tyre = (25, 25, 25)
    for cx in (0.2, 0.8):
        ring = c.disc(cx, 0.66, 0.32) & ~c.disc(cx, 0.66, 0.25)
        c.paint(ring, tyre)
        c.paint(c.capsule((cx, 0.66), (cx, 0.66), 0.03), s.main)
    frame = [((0.2, 0.66), (0.45, 0.66)), ((0.45, 0.66), (0.38, 0.3)), ((0.38, 0.3), (0.75, 0.32)),
             ((0.75, 0.32), (0.45, 0.66)), ((0.75, 0.32), (0.8, 0.66)), ((0.2, 0.66), (0.38, 0.3)),
             ((0.75, 0.32), (0.72, 0.08)), ((0.64, 0.08), (0.82, 0.06)), ((0.33, 0.24), (0.45, 0.24))]
    for p0, p1 in frame:
        c.paint(c.capsule(p0, p1, 0.035), s.main)
    a = 2 * np.pi * phase / N_PHASES
    c.paint(c.capsule((0.45, 0.66), (0.45 + 0.1 * np.cos(a), 0.66 + 0.16 * np.sin(a)), 0.03), (60, 60, 60))


def _car(c: _Canvas, s: Style, phase: int) -> None:
    roof0, roof1 = 0.22 + 0.08 * s.shape, 0.62 + 0.12 * s.shape
    c.paint(c.rect(0.02, 0.38, 0.98, 0.82) | c.ellipse(0.5, 0.6, 0.49, 0.24), s.main)
    cabin = c.rect(roof0, 0.06, roof1, 0.42) | c.capsule((roof0 - 0.08, 0.4), (roof0, 0.08), 0.05)
    c.paint(cabin | c.capsule((roof1 + 0.1, 0.4), (roof1, 0.08), 0.05), s.main)
    glass = (int(40 + 40 * s.shape), 55, 70)
    c.paint(c.rect(roof0 + 0.02, 0.13, (roof0 + roof1) / 2 - 0.01, 0.38), glass)
    c.paint(c.rect((roof0 + roof1) / 2 + 0.01, 0.13, roof1 - 0.01, 0.38), glass)
    _wheels(c, (0.2, 0.8), 0.82, 0.18)
    c.paint(c.rect(0.94, 0.48, 0.98, 0.58), (250, 240, 180))  # headlight


def _wheels(c: _Canvas, xs, cy, r) -> None:
    for cx in xs:
        c.paint(c.disc(cx, cy, r), (20, 20, 20))
        c.paint(c.disc(cx, cy, r * 0.45), (150, 150, 150))


def _bus(c: _Canvas, s: Style, phase: int) -> None:
    c.paint(c.rect(0.01, 0.02, 0.99, 0.9), s.main)
    c.paint(c.rect(0.01, 0.55, 0.99, 0.62), s.second)  # livery stripe
    n = 7
    for i in range(n):
        x0 = 0.05 + i * 0.85 / n
        c.paint(c.rect(x0, 0.12, x0 + 0.85 / n - 0.015, 0.45), (50, 65, 80))
    c.paint(c.rect(0.92, 0.1, 0.985, 0.5), (50, 65, 80))  # windscreen
    c.paint(c.rect(0.8, 0.15, 0.86, 0.88), (70, 80, 90))  # door
    _wheels(c, (0.15, 0.8), 0.9, 0.1)


def _truck(c: _Canvas, s: Style, phase: int) -> None:
    cab = 0.2 + 0.08 * s.shape
    c.paint(c.rect(0.0, 0.0, 1 - cab - 0.02, 0.8), s.main)  # cargo box (front faces right)
    c.paint(c.rect(1 - cab, 0.3, 0.99, 0.84) | c.capsule((1 - cab, 0.32), (0.97, 0.36), 0.06), s.second)
    c.paint(c.rect(1 - cab * 0.6, 0.36, 0.97, 0.55), (50, 65, 80))
    c.paint(c.rect(0.0, 0.78, 1.0, 0.84), (45, 45, 45))  # chassis
    _wheels(c, (0.12, 0.25, 0.88), 0.86, 0.12)


_DRAW = {PERSON: _person, BICYCLE: _bicycle, CAR: _car, BUS: _bus, TRUCK: _truck}


def draw_sprite(class_id: int, style: Style, h: int, w: int, phase: int = 0, flip: bool = False):
    """Render one object at `h` x `w` pixels; returns (mask (h, w) bool, rgb (h, w, 3) uint8).

    `phase` in [0, N_PHASES) animates legs and pedals; `flip` mirrors it (object moving left).
    """
    c = _Canvas(max(h, 1), max(w, 1))
    _DRAW[class_id](c, style, phase)
    if flip:
        return c.mask[:, ::-1].copy(), c.rgb[:, ::-1].copy()
    return c.mask, c.rgb
