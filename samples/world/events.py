"""Ground-truth events of a rendered clip: directed line crossings and zone entries/exits with dwell.

Everything is judged on the bottom-centre anchor of each object's whole box (`GroundTruth.anchor`),
sampled at the frames where the object is drawn, the way a tracker-based pipeline sees it.
"""
from __future__ import annotations

import numpy as np

from samples.world.layout import viewpoint_geometry
from samples.world.render import World, object_extent


def anchor_tracks(world: World, n_frames: int) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    """{track_id: (class_id, frames (K,) int64, anchors (K, 2) float64 px)} for frames 0..n_frames-1."""
    tracks = {}
    for obj in world.traffic.objects_between(0.0, (n_frames - 1) / world.fps):
        first = max(int(np.ceil(obj.t0 * world.fps)), 0)
        last = min(int(np.floor(obj.t1 * world.fps)), n_frames - 1)
        frames, anchors = [], []
        for i in range(first, last + 1):
            extent = object_extent(obj, world.time_of(i), world.size)
            if extent is not None:
                x0, y0, w, h = extent
                frames.append(i), anchors.append((x0 + w / 2, y0 + h))
        if frames:
            tracks[obj.oid] = (obj.class_id, np.asarray(frames, np.int64), np.asarray(anchors, np.float64))
    return tracks


def _cross(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """z of (b - a) x (p - a) for points p (K, 2)."""
    return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])


def line_crossings(frames: np.ndarray, anchors: np.ndarray, a, b) -> list[tuple[int, str]]:
    """(frame, "in"|"out") each time consecutive anchors cross the segment a->b.

    "in" = from the side where cross(b - a, p - a) < 0 to where it is > 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(frames) < 2:
        return []
    side = _cross(a, b, anchors) > 0
    p, q = anchors[:-1], anchors[1:]
    changed = side[:-1] != side[1:]
    # the anchor step must also straddle the infinite line through p->q at a point between a and b
    s1 = (q[:, 0] - p[:, 0]) * (a[1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (a[0] - p[:, 0])
    s2 = (q[:, 0] - p[:, 0]) * (b[1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (b[0] - p[:, 0])
    hits = np.flatnonzero(changed & ((s1 > 0) != (s2 > 0)))
    return [(int(frames[k + 1]), "in" if side[k + 1] else "out") for k in hits]


def inside_polygon(points: np.ndarray, polygon) -> np.ndarray:
    """(K,) bool: is each point (K, 2) inside `polygon` [[x, y], ...] (even-odd rule)."""
    poly = np.asarray(polygon, np.float64)
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        spans = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= spans & (x < x_at)
    return inside


def zone_visits(frames: np.ndarray, anchors: np.ndarray, polygon) -> list[tuple[int, int | None]]:
    """(enter frame, exit frame or None if still inside at the end) for each outside->inside transition."""
    inside = inside_polygon(anchors, polygon)
    visits, entered = [], None
    for k in range(1, len(frames)):
        if inside[k] and not inside[k - 1]:
            entered = int(frames[k])
        elif not inside[k] and inside[k - 1] and entered is not None:
            visits.append((entered, int(frames[k])))
            entered = None
    if entered is not None:
        visits.append((entered, None))
    return visits


def pts_ns(index: int, fps: float) -> int:
    """Presentation time of frame `index`: round(index * 1e9 / fps) nanoseconds."""
    return int(round(index * 1e9 / fps))


def clip_events(world: World, n_frames: int) -> dict:
    """All ground-truth events of frames 0..n_frames-1 and per-line counts.

    Returns {"events": [{"frame", "pts_ns", "kind", "rule", "track_id", "class_id", ...}] sorted by frame,
    "line_counts": {line: {"in": n, "out": n}}, "geometry": viewpoint_geometry(...)}.
    Kinds: "line_cross" (+ "direction"), "zone_enter", "zone_exit" (+ "dwell_s").
    """
    geometry = viewpoint_geometry(world.scene, world.size)
    events = []
    counts = {name: {"in": 0, "out": 0} for name in geometry["lines"]}
    for tid, (cls, frames, anchors) in sorted(anchor_tracks(world, n_frames).items()):
        base = {"track_id": tid, "class_id": cls}
        for name, (a, b) in geometry["lines"].items():
            for frame, direction in line_crossings(frames, anchors, a, b):
                counts[name][direction] += 1
                events.append({"frame": frame, "kind": "line_cross", "rule": name, "direction": direction, **base})
        for name, poly in geometry["zones"].items():
            for enter, leave in zone_visits(frames, anchors, poly):
                events.append({"frame": enter, "kind": "zone_enter", "rule": name, **base})
                if leave is not None:
                    dwell = round((leave - enter) / world.fps, 3)
                    events.append({"frame": leave, "kind": "zone_exit", "rule": name, "dwell_s": dwell, **base})
    for e in events:
        e["pts_ns"] = pts_ns(e["frame"], world.fps)
    events.sort(key=lambda e: (e["frame"], e["track_id"], e["kind"], e["rule"]))
    return {"events": events, "line_counts": counts, "geometry": geometry}
