"""Viewpoints of the synthetic world: where the road, sidewalks, zones and counting lines are.

Geometry is kept in normalised image coordinates (u = x / W, v = y / H) so that one viewpoint
renders at any size; `viewpoint_geometry` turns it into source pixels for a given size.
The camera looks at a flat ground from slightly above: a ground point at height v is drawn with
`pixels_per_metre(v) = H * SCALE_K * (v - HORIZON_V)`, so farther objects (smaller v) are smaller.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CLASS_NAMES: list[str] = ["person", "bicycle", "car", "bus", "truck"]
PERSON, BICYCLE, CAR, BUS, TRUCK = range(5)

HORIZON_V = -0.7  # virtual horizon above the picture: a mild perspective (near/far size ratio ~2)
SCALE_K = 0.0647  # pixels per metre per unit of (v - HORIZON_V), in units of the frame height


def metres_to_v(metres: float, v: float) -> float:
    """Height in normalised v of `metres` standing at ground height v."""
    return metres * SCALE_K * (v - HORIZON_V)


@dataclass(frozen=True)
class Lane:
    """A straight horizontal path at ground height `v`; `direction` +1 moves right, -1 left.

    `classes` lists the class ids that use the lane with their relative spawn weights;
    `rate_hz` is the mean number of arrivals per second; `spread_v` scatters pedestrians across a sidewalk.
    """

    v: float
    direction: int
    classes: dict[int, float]
    rate_hz: float
    spread_v: float = 0.0


@dataclass(frozen=True)
class Walkway:
    """A pedestrian polyline in (u, v); walkers go either way and may stop at `pause_at` (index of a point)."""

    points: tuple[tuple[float, float], ...]
    rate_hz: float
    pause_at: int | None = None


@dataclass(frozen=True)
class Viewpoint:
    """One camera: ground bands for painting, traffic paths, zones and counting lines (all normalised)."""

    name: str
    buildings_v: float  # facades occupy v in [0, buildings_v]
    road: tuple[float, float]  # road band (v top, v bottom)
    sidewalks: tuple[tuple[float, float], ...]
    crosswalk_u: float | None
    lanes: tuple[Lane, ...]
    walkways: tuple[Walkway, ...]
    zones: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    lines: dict[str, tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=dict)


_VEHICLES = {CAR: 0.55, TRUCK: 0.22, BUS: 0.23}

VIEWPOINTS: dict[str, Viewpoint] = {
    "plaza": Viewpoint(
        name="plaza",
        buildings_v=0.24,
        road=(0.32, 0.54),
        sidewalks=((0.24, 0.32), (0.54, 0.62)),
        crosswalk_u=None,
        lanes=(
            Lane(0.41, -1, _VEHICLES, 0.12),
            Lane(0.52, +1, _VEHICLES, 0.14),
            Lane(0.30, +1, {PERSON: 1.0}, 0.15, spread_v=0.05),
            Lane(0.30, -1, {PERSON: 0.6, BICYCLE: 0.4}, 0.12, spread_v=0.05),
            Lane(0.60, -1, {PERSON: 0.7, BICYCLE: 0.3}, 0.18, spread_v=0.05),
            Lane(0.60, +1, {PERSON: 1.0}, 0.15, spread_v=0.05),
        ),
        walkways=(
            Walkway(((0.05, 1.15), (0.30, 0.85), (0.55, 0.66)), 0.10, pause_at=1),
            Walkway(((1.05, 0.78), (0.70, 0.82), (0.40, 0.95), (0.20, 1.2)), 0.08, pause_at=1),
            Walkway(((0.75, 1.2), (0.80, 0.90), (0.90, 0.63)), 0.06),
        ),
        zones={"square": ((0.22, 0.72), (0.78, 0.72), (0.86, 0.98), (0.14, 0.98))},
        lines={"road": ((0.5, 0.33), (0.5, 0.55)), "plaza": ((0.05, 0.80), (0.95, 0.80))},
    ),
    "street": Viewpoint(
        name="street",
        buildings_v=0.22,
        road=(0.38, 0.80),
        sidewalks=((0.22, 0.38), (0.80, 1.0)),
        crosswalk_u=0.30,
        lanes=(
            Lane(0.47, -1, _VEHICLES, 0.10),
            Lane(0.58, -1, {CAR: 0.8, TRUCK: 0.2}, 0.10),
            Lane(0.69, +1, {CAR: 0.8, TRUCK: 0.2}, 0.10),
            Lane(0.78, +1, {BICYCLE: 1.0}, 0.05),
            Lane(0.79, +1, _VEHICLES, 0.08),
            Lane(0.34, +1, {PERSON: 1.0}, 0.18, spread_v=0.06),
            Lane(0.34, -1, {PERSON: 1.0}, 0.14, spread_v=0.06),
            Lane(0.93, -1, {PERSON: 0.8, BICYCLE: 0.2}, 0.15, spread_v=0.10),
        ),
        walkways=(
            Walkway(((0.27, 0.36), (0.31, 0.60), (0.33, 1.25)), 0.07),
            Walkway(((0.34, 1.25), (0.33, 0.85), (0.30, 0.37), (-0.1, 0.34)), 0.06, pause_at=1),
        ),
        zones={"crosswalk": ((0.25, 0.38), (0.36, 0.38), (0.38, 0.80), (0.23, 0.80))},
        lines={"eastbound": ((0.6, 0.62), (0.6, 0.82)), "westbound": ((0.6, 0.40), (0.6, 0.62))},
    ),
    "junction": Viewpoint(
        name="junction",
        buildings_v=0.30,
        road=(0.46, 0.72),
        sidewalks=((0.30, 0.46), (0.72, 0.82)),
        crosswalk_u=0.70,
        lanes=(
            Lane(0.56, -1, _VEHICLES, 0.11),
            Lane(0.70, +1, _VEHICLES, 0.11),
            Lane(0.42, -1, {PERSON: 0.7, BICYCLE: 0.3}, 0.15, spread_v=0.07),
            Lane(0.42, +1, {PERSON: 1.0}, 0.12, spread_v=0.07),
            Lane(0.80, +1, {PERSON: 0.8, BICYCLE: 0.2}, 0.16, spread_v=0.03),
        ),
        walkways=(
            Walkway(((0.68, 0.44), (0.72, 0.78), (0.55, 0.92), (0.35, 1.25)), 0.08, pause_at=2),
            Walkway(((1.05, 0.95), (0.75, 0.90), (0.71, 0.45)), 0.06),
            Walkway(((-0.05, 0.90), (0.40, 0.97), (0.60, 1.25)), 0.07),
        ),
        zones={"corner": ((0.45, 0.84), (0.95, 0.84), (0.95, 1.0), (0.45, 1.0))},
        lines={"road": ((0.35, 0.47), (0.35, 0.73)), "crossing": ((0.62, 0.60), (0.80, 0.60))},
    ),
}


def get_viewpoint(name: str) -> Viewpoint:
    """The viewpoint called `name`; raises ValueError listing the known ones."""
    try:
        return VIEWPOINTS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic scene {name!r}; choose one of {sorted(VIEWPOINTS)}") from None


def viewpoint_geometry(scene: str, size: tuple[int, int]) -> dict:
    """Zones and counting lines of `scene` in source pixels for a frame of `size` = (width, height).

    Returns `{"zones": {name: [[x, y], ...]}, "lines": {name: [[x1, y1], [x2, y2]]}}` (floats, pixels).
    A line crossing is `"in"` when the bottom-centre anchor moves from the side where
    `cross(B - A, P - A) < 0` to where it is `> 0` (for a line drawn top to bottom: right to left), else `"out"`.
    """
    view = get_viewpoint(scene)
    w, h = size

    def px(p: tuple[float, float]) -> list[float]:
        return [round(p[0] * w, 2), round(p[1] * h, 2)]

    return {
        "zones": {name: [px(p) for p in poly] for name, poly in view.zones.items()},
        "lines": {name: [px(a), px(b)] for name, (a, b) in view.lines.items()},
    }
