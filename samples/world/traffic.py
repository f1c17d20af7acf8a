"""Who is where: a deterministic, random-access schedule of objects moving along a viewpoint's paths.

Arrivals are drawn per path in blocks of `BLOCK_S` seconds from a generator seeded by
(seed, path, block), so the objects present at any time are computed without simulating from 0.
An object's ground anchor (u, v) is piecewise linear in time between keyframes, so its position at
any instant is one `np.interp`. Vehicles in one lane share the lane's speed and keep a headway, so
they never drive through each other; pedestrians and cyclists pass and occlude one another.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from samples.world.layout import (
    BICYCLE,
    BUS,
    CAR,
    HORIZON_V,
    PERSON,
    SCALE_K,
    TRUCK,
    Lane,
    Viewpoint,
    Walkway,
)
from samples.world.sprites import SIZES_M, Style, random_style

BLOCK_S = 60.0
MAX_DURATION_S = 100.0  # objects that would stay longer are not spawned (keeps look-back bounded)
SPEED_MS = {PERSON: (0.8, 1.9), BICYCLE: (3.0, 6.0), CAR: (6.0, 13.0), BUS: (5.0, 9.0), TRUCK: (5.0, 10.0)}
STRIDE_M = 0.45  # ground distance per animation phase step
KEPT_BLOCKS = 4  # a frame needs the blocks of the last MAX_DURATION_S (at most 3); older ones are spawned again if asked for


@dataclass
class WorldObject:
    """One moving object. Times in seconds; (u, v) ground anchor normalised; sizes in metres."""

    oid: int
    class_id: int
    style: Style
    key_t: np.ndarray  # (K,) float64 seconds, non-decreasing
    key_u: np.ndarray  # (K,)
    key_v: np.ndarray  # (K,)
    key_d: np.ndarray  # (K,) metres travelled, drives the animation phase
    height_m: float
    width_m: float
    lift_m: float = 0.0  # riders sit above the ground anchor they share with their bicycle
    draw_after: int = 0  # riders are drawn after their bicycle at the same depth
    sprites: dict = field(default_factory=dict, repr=False)

    @property
    def t0(self) -> float:
        return float(self.key_t[0])

    @property
    def t1(self) -> float:
        return float(self.key_t[-1])

    def anchor(self, t: float | np.ndarray):
        """Ground anchor (u, v) at time(s) t."""
        return np.interp(t, self.key_t, self.key_u), np.interp(t, self.key_t, self.key_v)

    def facing_left(self) -> bool:
        return bool(self.key_u[-1] < self.key_u[0])


def scale_px(v: float | np.ndarray, height: int):
    """Pixels per metre on the ground at normalised height v for a frame `height` pixels tall."""
    return height * SCALE_K * (np.asarray(v) - HORIZON_V)


def _metres(u0, v0, u1, v1, aspect: float) -> float:
    """Approximate ground distance in metres between two normalised points (aspect = W / H)."""
    du, dv = (u1 - u0) * aspect, v1 - v0
    return float(np.hypot(du, dv) / (SCALE_K * ((v0 + v1) / 2 - HORIZON_V)))


def _polyline_keys(points, speed: float, aspect: float, pause: tuple[int, float] | None):
    """Keyframes (t, u, v, d) walking `points` at `speed` m/s from t = 0, subdividing for perspective."""
    t, d = [0.0], [0.0]
    us, vs = [points[0][0]], [points[0][1]]
    for i in range(1, len(points)):
        if pause is not None and pause[0] == i - 1 and i - 1 > 0:
            t.append(t[-1] + pause[1]), d.append(d[-1]), us.append(us[-1]), vs.append(vs[-1])
        (ua, va), (ub, vb) = points[i - 1], points[i]
        for s in np.linspace(0, 1, 9)[1:]:
            u, v = ua + (ub - ua) * s, va + (vb - va) * s
            step = _metres(us[-1], vs[-1], u, v, aspect)
            t.append(t[-1] + step / speed), d.append(d[-1] + step), us.append(u), vs.append(v)
    return [np.asarray(a, np.float64) for a in (t, us, vs, d)]


def _pick_class(rng: np.random.Generator, weights: dict[int, float]) -> int:
    classes = list(weights)
    p = np.asarray([weights[c] for c in classes], np.float64)
    return int(classes[int(rng.choice(len(classes), p=p / p.sum()))])


def _sized(rng: np.random.Generator, class_id: int) -> tuple[float, float]:
    h, w = SIZES_M[class_id]
    k = rng.uniform(0.88, 1.12)
    return h * k * rng.uniform(0.95, 1.05), w * k * rng.uniform(0.9, 1.1)


class Traffic:
    """All objects of one (viewpoint, seed) world; `active(t)` lists those present at time t."""

    def __init__(self, view: Viewpoint, seed: int, aspect: float):
        self.view, self.seed, self.aspect = view, seed, aspect
        self._blocks: dict[int, list[WorldObject]] = {}
        speed_rng = np.random.default_rng([seed, 3])
        lo, hi = SPEED_MS[CAR]
        self._lane_speed = [speed_rng.uniform(lo, hi) for _ in view.lanes]

    def active(self, t: float) -> list[WorldObject]:
        first = int(np.floor((t - MAX_DURATION_S) / BLOCK_S))
        out = []
        for b in range(max(first, -2), int(np.floor(t / BLOCK_S)) + 1):
            for o in self._block(b):
                if o.t0 <= t <= o.t1:
                    out.append(o)
                elif o.t1 < t:
                    o.sprites.clear()  # gone from the scene: its drawings would stay as long as its block
        return out

    def objects_between(self, t_start: float, t_end: float) -> list[WorldObject]:
        """Every object present at some time in [t_start, t_end]."""
        first = int(np.floor((t_start - MAX_DURATION_S) / BLOCK_S))
        out = []
        for b in range(max(first, -2), int(np.floor(t_end / BLOCK_S)) + 1):
            out.extend(o for o in self._block(b) if o.t0 <= t_end and o.t1 >= t_start)
        return out

    def _block(self, b: int) -> list[WorldObject]:
        objs = self._blocks.get(b)
        if objs is None:
            if len(self._blocks) >= KEPT_BLOCKS:  # long runs: forget the oldest block with its objects' sprites
                self._blocks.pop(min(self._blocks))
            objs = self._blocks[b] = self._spawn_block(b)
        return objs

    def _spawn_block(self, b: int) -> list[WorldObject]:
        objs: list[WorldObject] = []
        for p, lane in enumerate(self.view.lanes):
            objs += self._spawn_lane(b, p, lane)
        for p, walk in enumerate(self.view.walkways):
            objs += self._spawn_walkway(b, len(self.view.lanes) + p, walk)
        return objs

    def _arrivals(self, b: int, path: int, rate_hz: float, min_gap_s: float) -> tuple[np.random.Generator, list[float]]:
        rng = np.random.default_rng([self.seed, 101, path, b + 1000])
        times, t = [], b * BLOCK_S + rng.uniform(0, 1 / rate_hz)
        # block -2 and -1 pre-populate the scene so frame 0 already has traffic
        while t < (b + 1) * BLOCK_S - min_gap_s:
            times.append(t)
            t += min_gap_s + rng.exponential(1 / rate_hz)
        return rng, times

    def _oid(self, b: int, path: int, k: int) -> int:
        return ((b + 3) * 64 + path) * 1000 + 2 * k + 1

    def _spawn_lane(self, b: int, path: int, lane: Lane) -> list[WorldObject]:
        vehicle = lane.spread_v == 0.0
        speed = self._lane_speed[path]
        min_gap = (13.0 / speed + 0.6) if vehicle else 0.0
        rng, times = self._arrivals(b, path, lane.rate_hz, min_gap)
        objs = []
        for k, t0 in enumerate(times):
            cls = _pick_class(rng, lane.classes)
            h_m, w_m = _sized(rng, cls)
            v = lane.v + (rng.uniform(-0.5, 0.5) * lane.spread_v if not vehicle else 0.0)
            sp = speed if vehicle else rng.uniform(*SPEED_MS[cls])
            objs += self._straight(self._oid(b, path, k), cls, rng, t0, v, lane.direction, sp, h_m, w_m)
        return objs

    def _straight(self, oid, cls, rng, t0, v, direction, speed, h_m, w_m) -> list[WorldObject]:
        half_u = w_m * SCALE_K * (v - HORIZON_V) / self.aspect / 2 + 0.01
        u0, u1 = (-half_u, 1 + half_u) if direction > 0 else (1 + half_u, -half_u)
        dist = _metres(u0, v, u1, v, self.aspect)
        dur = dist / speed
        if dur > MAX_DURATION_S:
            return []
        keys = dict(key_t=np.array([t0, t0 + dur]), key_u=np.array([u0, u1]), key_v=np.array([v, v]),
                    key_d=np.array([0.0, dist]))
        obj = WorldObject(oid, cls, random_style(rng), height_m=h_m, width_m=w_m, **keys)
        if cls != BICYCLE:
            return [obj]
        rh, rw = _sized(rng, PERSON)
        rider = WorldObject(oid + 1, PERSON, random_style(rng), height_m=rh * 0.9, width_m=rw,
                            lift_m=0.45, draw_after=1, **{k: a.copy() for k, a in keys.items()})
        return [obj, rider]

    def _spawn_walkway(self, b: int, path: int, walk: Walkway) -> list[WorldObject]:
        rng, times = self._arrivals(b, path, walk.rate_hz, 0.0)
        objs = []
        for k, t0 in enumerate(times):
            h_m, w_m = _sized(rng, PERSON)
            points = walk.points[::-1] if rng.random() < 0.5 else walk.points
            pause = None
            if walk.pause_at is not None and rng.random() < 0.4:
                idx = walk.pause_at if points is walk.points else len(points) - 1 - walk.pause_at
                pause = (idx, float(rng.uniform(2.0, 12.0)))
            jitter = rng.uniform(-0.02, 0.02, 2)
            pts = [(u + jitter[0], v + jitter[1]) for u, v in points]
            t, u, v, d = _polyline_keys(pts, rng.uniform(*SPEED_MS[PERSON]), self.aspect, pause)
            if t[-1] > MAX_DURATION_S:
                continue
            objs.append(WorldObject(self._oid(b, path, k), PERSON, random_style(rng), t + t0, u, v, d, h_m, w_m))
        return objs
