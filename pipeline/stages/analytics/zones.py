"""Polygon zones: who entered, who left, for how long, and how many are inside now."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config.models import ZoneConfig
from pipeline.stages.analytics.common import class_ids_for, row_filter
from pipeline.stages.analytics.geometry import (
    anchor_points,
    distance_to_boundary,
    points_in_polygon,
)
from pipeline.types import Event, Moment

NS = 1_000_000_000


@dataclass(slots=True)
class Visit:
    """One track's stay in a zone; times are the stream's pts in ns."""

    track_id: int
    class_id: int
    entered_ns: int
    last_seen_ns: int  # reported on a frame: detected, or a coasting prediction
    detected_ns: int  # detected on a frame (score above 0): the end of a visit whose track went missing

    def dwell_s(self, now_ns: int) -> float:
        return (now_ns - self.entered_ns) / NS


class ZoneMonitor:
    """Enter/exit/dwell/occupancy of one polygon zone for one stream (its frames, in order).

    A track is inside when its anchor point is inside the polygon and it passes the zone's class filter; it enters
    only at a score of `min_score` or more, and once inside it is where its box is at any score (seen at a lower one
    outside, it has left). The state changes only when the anchor is more than a band of `hysteresis` x box height
    (at least `min_band_px`, at most half the zone's mean half-width) inside or outside the edge, so a box jittering
    on the edge does not enter and leave over and over (a larger band delays enter/exit a little). A track that stops
    being reported is not "outside": its visit goes on while the tracker may find the track again,
    and ends with reason "lost" when the tracker gives it up (`lose`), or "left" if it is found again outside; either
    way at the time it was last detected, as it may have left at any time it was missing (a dwell never counts it).
    A coasting track's predicted box (score 0) keeps its visit going but never enters or leaves: a prediction drifts.
    max_missing_s: for tracks that come with no tracker's word on when they end: a visit unreported this long is lost.
    """

    def __init__(self, config: ZoneConfig, class_names: list[str], max_missing_s: float = 2.0,
                 hysteresis: float = 0.1, min_band_px: float = 2.0):
        self.config = config
        self.name = config.name
        self.polygon = np.asarray(config.polygon, np.float64)
        # A band never wider than half the zone's mean half-width (area / perimeter): in a narrow zone, a
        # doorway or a strip along a kerb, a band of a tall box's height would leave no point clear of both edges.
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        area = abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
        self.max_band_px = 0.5 * area / float(np.hypot(*(np.roll(self.polygon, -1, axis=0) - self.polygon).T).sum())
        self.allowed = class_ids_for(config.classes, class_names, f"zone '{config.name}'")
        self.max_missing_ns = int(max_missing_s * NS)
        self.hysteresis = hysteresis
        self.min_band_px = min_band_px
        self.inside: dict[int, Visit] = {}
        self.entered_total = 0
        self._previous_ns: int | None = None  # the pts of the frame before

    @property
    def occupancy(self) -> int:
        return len(self.inside)

    def update(self, at: Moment, track_id: np.ndarray, class_id: np.ndarray, score: np.ndarray,
               xyxy: np.ndarray) -> list[Event]:
        """One frame of tracked rows (N,) / (N, 4) pixels captured `at`; returns zone_enter / zone_exit events."""
        ts_ns, previous_ns, self._previous_ns = at.pts_ns, self._previous_ns, at.pts_ns
        keep = row_filter(class_id, score, self.allowed, 0.0) & (track_id >= 0)
        ids, classes, boxes = track_id[keep], class_id[keep], np.asarray(xyxy, np.float64)[keep]
        may_enter = np.asarray(score)[keep] >= self.config.min_score  # under it: seen where it is, never entering
        anchors = anchor_points(boxes, self.config.anchor)
        inside = points_in_polygon(anchors, self.polygon)
        band = np.minimum(np.maximum(self.hysteresis * (boxes[:, 3] - boxes[:, 1]), self.min_band_px), self.max_band_px)
        clear = distance_to_boundary(anchors, self.polygon) > band  # far enough from the edge to decide
        detected = np.asarray(score)[keep] > 0
        clear &= detected  # a coasting prediction (score 0) keeps a visit, never starts or ends one
        events = []
        for tid, cid, is_in, decided, seen, enters in zip(ids.tolist(), classes.tolist(), inside.tolist(),
                                                          clear.tolist(), detected.tolist(), may_enter.tolist()):
            visit = self.inside.get(tid)
            if visit is None and not enters:
                continue
            last_detected_ns = None if visit is None else visit.detected_ns
            if visit is not None and seen:
                visit.detected_ns = ts_ns
            if not decided:
                if visit is not None:
                    visit.last_seen_ns = ts_ns
                continue
            if is_in and visit is None:
                self.inside[tid] = Visit(tid, cid, ts_ns, ts_ns, ts_ns)
                self.entered_total += 1
                events.append(at.event(self.name, "zone_enter", tid, cid, {"zone": self.name}))
            elif is_in:
                visit.last_seen_ns = ts_ns
            elif visit is not None:  # missed on the frames before: it left unseen; its dwell ends when last detected
                exit_ns = ts_ns if last_detected_ns == previous_ns else last_detected_ns
                events.append(self._exit(at, tid, exit_ns, "left"))
        return events

    def lose(self, at: Moment, ended_tracks: np.ndarray | None) -> list[Event]:
        """End the visits of the tracks the tracker gave up on the frame captured `at` (`ended_tracks`, (K,) ids),
        or, with no tracker to say (None), of those unreported for more than `max_missing_s`. Each exits as "lost" at
        the time its track was last detected, so its dwell has none of the time it was missing in."""
        if ended_tracks is None:
            gone = [t for t, v in self.inside.items() if at.pts_ns - v.last_seen_ns > self.max_missing_ns]
        else:
            gone = [t for t in np.asarray(ended_tracks).tolist() if t in self.inside]
        return [self._exit(at, tid, self.inside[tid].detected_ns, "lost") for tid in gone]

    def close(self, at: Moment, reason: str = "end_of_stream") -> list[Event]:
        """End every open visit (the stream ended after the frame captured `at`); returns their zone_exit events."""
        return [self._exit(at, tid, at.pts_ns, reason) for tid in list(self.inside)]

    def _exit(self, at: Moment, track_id: int, ts_ns: int, reason: str) -> Event:
        visit = self.inside.pop(track_id)
        payload = {"zone": self.name, "dwell_s": round(visit.dwell_s(ts_ns), 3), "reason": reason,
                   "entered_ns": visit.entered_ns}
        return at.event(self.name, "zone_exit", track_id, visit.class_id, payload, ts_ns=ts_ns)
