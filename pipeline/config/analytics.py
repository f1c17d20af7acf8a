"""Zones, counting lines and alert rules as the YAML states them; their geometry is checked here, so a zone
that encloses nothing or a line of zero length is refused when the file is read, not silent at run time."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.fields import DAY_S, Coordinate, Fraction, KeyPathError, Name, Strict

Point = tuple[Coordinate, Coordinate]

MIN_AREA_PX = 1.0
"""A zone enclosing less than this (square source pixels) encloses nothing: its vertices are collinear."""

IN_FRACTIONS = ("every coordinate lies within 0..1, as if in fractions of the frame; zones and lines are drawn in "
                "source pixels: multiply x by the frame's width and y by its height")

Anchor = Literal["bottom_center", "center", "top_center"]


class ZoneConfig(Strict):
    name: Name
    streams: list[str] | None = Field(None, description="streams this zone applies to (None = all)")
    polygon: list[Point] = Field(min_length=3, max_length=1000,
                                 description="source-pixel vertices, in order around the zone")
    classes: list[Name] | None = Field(None, min_length=1, description="classes counted in the zone (None = all)")
    min_score: Fraction = 0.0
    anchor: Anchor = "bottom_center"

    @model_validator(mode="after")
    def _encloses_an_area(self) -> "ZoneConfig":
        crossing = crossing_edges(_distinct(self.polygon))
        if crossing is not None:
            raise KeyPathError(("polygon",), f"edges {crossing[0]} and {crossing[1]} cross each other; list the "
                               "vertices in order around the zone")
        area = abs(polygon_area(self.polygon))
        if _in_fractions(self.polygon):
            raise KeyPathError(("polygon",), f"encloses {area:g} square pixels: {IN_FRACTIONS}")
        if area < MIN_AREA_PX:
            raise KeyPathError(("polygon",), f"encloses {area:g} square pixels: its vertices are (nearly) collinear "
                               "or repeated; give at least three corners around the zone")
        return self


class LineConfig(Strict):
    name: Name
    streams: list[str] | None = None
    start: Point
    end: Point
    classes: list[Name] | None = Field(None, min_length=1)
    min_score: Fraction = 0.0
    anchor: Anchor = "bottom_center"

    @model_validator(mode="after")
    def _has_a_length(self) -> "LineConfig":
        near, fractions = _distance(self.start, self.end) < 1.0, _in_fractions([self.start, self.end])
        if near or fractions:
            where = f", within a pixel of start {list(self.start)}" if near else f", start {list(self.start)}"
            why = IN_FRACTIONS if fractions else "a line needs two distinct endpoints to be crossed"
            raise KeyPathError(("end",), f"is {list(self.end)}{where}: {why}")
        return self


_WHEN_KEYS = {  # keys that mean something only for some kinds of rule
    "zone": ("dwell", "occupancy", "enter", "exit"),
    "line": ("cross",),
    "direction": ("cross",),
    "min_seconds": ("dwell",),
    "min_count": ("occupancy",),
    "debounce_s": ("dwell", "occupancy", "enter", "exit"),
}


class AlertRule(Strict):
    name: Name
    when: Literal["dwell", "cross", "occupancy", "enter", "exit"]
    zone: Name | None = None
    line: Name | None = None
    direction: Literal["in", "out", "any"] = "any"
    classes: list[Name] | None = Field(None, min_length=1)
    min_seconds: float = Field(0.0, ge=0, le=DAY_S, description="dwell: time inside the zone before the alert")
    min_count: int = Field(1, ge=1, le=10_000, description="occupancy: objects in the zone at once")
    debounce_s: float = Field(0.0, ge=0, le=DAY_S, description="condition must hold this long before firing")
    cooldown_s: float = Field(10.0, ge=0, le=7 * DAY_S,
                              description="no repeat of this rule for the same track/zone within this time")
    snapshot: bool = True
    clip: bool = False

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> "AlertRule":
        for key, kinds in _WHEN_KEYS.items():
            if self.when not in kinds and getattr(self, key) != AlertRule.model_fields[key].default:
                raise KeyPathError((key,), f"means nothing to a '{self.when}' rule (only to {' and '.join(kinds)} "
                                   "rules); remove it")
        return self


def polygon_area(points: list[Point]) -> float:
    """Signed area (shoelace) of the polygon through `points`, in square source pixels."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))


def crossing_edges(points: list[Point]) -> tuple[int, int] | None:
    """(i, j): edge i (from vertex i to the next) crosses or touches edge j, which it does not follow or precede
    (a figure eight, through a vertex too); None for a simple polygon."""
    edges = list(zip(points, points[1:] + points[:1]))
    for i, (a, b) in enumerate(edges):
        for j in range(i + 2, len(edges)):
            if i == 0 and j == len(edges) - 1:
                continue  # the first and last edges share vertex 0
            c, d = edges[j]
            if _segments_meet(a, b, c, d):
                return i, j
    return None


def _in_fractions(points: list[Point]) -> bool:
    """Whether every coordinate lies within 0..1: drawn in fractions of the frame, which in pixels is one pixel."""
    return all(0 <= c <= 1 for point in points for c in point)


def _distinct(points: list[Point]) -> list[Point]:
    """`points` without a vertex listed twice in a row, or again at the end (a closed ring, as drawing tools
    export it): the same polygon."""
    out = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
    return out[:-1] if len(out) > 1 and out[-1] == out[0] else out


def _segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether segments ab and cd cross or one ends on the other (not when all four points lie on one line:
    a zone whose vertices all do is refused by its area)."""
    sides = _side(a, b, c), _side(a, b, d), _side(c, d, a), _side(c, d, b)
    return sides[0] * sides[1] <= 0 and sides[2] * sides[3] <= 0 and any(sides)


def _side(a: Point, b: Point, p: Point) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _distance(a: Point, b: Point) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5
