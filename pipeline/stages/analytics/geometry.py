"""Vectorised geometry for zones and lines: anchor points, point-in-polygon, side of a line."""
from __future__ import annotations

import numpy as np

Anchor = str  # "bottom_center" | "center" | "top_center"


def anchor_points(xyxy: np.ndarray, anchor: Anchor = "bottom_center") -> np.ndarray:
    """The point of each box that stands for the object: (N, 4) xyxy pixels -> (N, 2) float64 x, y.

    bottom_center (the feet of a person, the ground contact of a car) suits zones drawn on the floor.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    if anchor == "bottom_center":
        y = xyxy[:, 3]
    elif anchor == "center":
        y = (xyxy[:, 1] + xyxy[:, 3]) / 2
    elif anchor == "top_center":
        y = xyxy[:, 1]
    else:
        raise ValueError(f"unknown anchor {anchor!r}; use bottom_center, center or top_center")
    return np.stack([x, y], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of `points (N, 2)` lie inside `polygon (V, 2)`; returns (N,) bool.

    Points exactly on an edge may fall either way; analytics only ever needs a consistent answer.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64)
    x, y = points[:, 0:1], points[:, 1:2]  # (N, 1)
    x1, y1 = poly[:, 0], poly[:, 1]  # (V,)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)  # (N, V)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2) == 1


def signed_distance(points: np.ndarray, start, end) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (pixels) of `points (N, 2)` from the line start->end, and their position along it.

    Positive distance = the right-hand side when walking from `start` to `end` on screen (image y grows
    downwards), i.e. the sign of the cross product (end - start) x (point - start). The position is
    0 at `start` and 1 at `end`. Returns two (N,) float64 arrays.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    s = np.asarray(start, np.float64)
    d = np.asarray(end, np.float64) - s
    length = max(float(np.hypot(*d)), 1e-9)
    rel = points - s
    cross = d[0] * rel[:, 1] - d[1] * rel[:, 0]
    along = (rel @ d) / length**2
    return cross / length, along


def distance_to_boundary(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance (pixels) of `points (N, 2)` to the nearest edge of `polygon (V, 2)`; returns (N,) float64."""
    points = np.asarray(points, np.float64).reshape(-1, 1, 2)
    a = np.asarray(polygon, np.float64)
    d = np.roll(a, -1, axis=0) - a  # (V, 2) edge vectors
    t = np.clip(((points - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)  # (N, V)
    nearest = a + t[..., None] * d
    return np.sqrt(((points - nearest) ** 2).sum(-1)).min(axis=1)
