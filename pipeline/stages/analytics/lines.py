"""Directed counting lines: count each track once per crossing, in or out, with jitter hysteresis."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import LineConfig
from pipeline.stages.analytics.common import class_ids_for, row_filter
from pipeline.stages.analytics.geometry import anchor_points, signed_distance
from pipeline.types import Event, Moment

MAX_TRACKS = 4096
"""Tracks per line whose side is remembered: bounds memory over weeks of tracks, far more than a scene holds at once
(the tracker's lost tracks included)."""


class LineCounter:
    """Counts crossings of the segment `start -> end` for one stream.

    Direction: "in" = the anchor moved to the right-hand side of the line when walking from `start`
    to `end` on screen (image y down), i.e. the cross product (end - start) x (p - start) became
    positive; "out" = it became negative. A track's side only changes once its anchor is more than
    a band of `hysteresis` x box height (at least `min_band_px`) past the line, so a box jittering on
    the line is not counted again and again; a wider band ignores more jitter but needs a clearer
    crossing. A crossing counts only if the anchor's way from where it was last clear of the band to where it
    is now meets the segment itself, not the line beyond its ends. A coasting track's predicted box (score 0)
    keeps its side but never changes it: a prediction that overshoots crosses nothing. A track's side is kept for
    as long as the tracker may find the track again (a track id names one object), the last `MAX_TRACKS` seen.
    """

    def __init__(self, config: LineConfig, class_names: list[str], hysteresis: float = 0.1,
                 min_band_px: float = 2.0):
        self.config = config
        self.name = config.name
        self.allowed = class_ids_for(config.classes, class_names, f"line '{config.name}'")
        self.hysteresis = hysteresis
        self.min_band_px = min_band_px
        # track id -> (side +1/-1, the anchor x, y where it was last clear of the band), least recently seen first
        self._side: dict[int, tuple[int, float, float]] = {}
        self.counts = {"in": 0, "out": 0}

    def update(self, at: Moment, track_id: np.ndarray, class_id: np.ndarray, score: np.ndarray,
               xyxy: np.ndarray) -> list[Event]:
        """One frame of tracked rows (N,) / (N, 4) pixels captured `at`; returns line_cross events."""
        keep = row_filter(class_id, score, self.allowed, self.config.min_score) & (track_id >= 0)
        boxes = np.asarray(xyxy, np.float64)[keep]
        anchors = anchor_points(boxes, self.config.anchor)
        dist, _ = signed_distance(anchors, self.config.start, self.config.end)
        band = np.maximum(self.hysteresis * (boxes[:, 3] - boxes[:, 1]), self.min_band_px)
        side = np.where(dist > band, 1, np.where(dist < -band, -1, 0))
        side[np.asarray(score)[keep] <= 0] = 0  # a coasting prediction: as inside the band
        events = []
        for tid, cid, s, (x, y) in zip(track_id[keep].tolist(), class_id[keep].tolist(), side.tolist(), anchors.tolist()):
            previous = self._side.pop(tid, None)  # back in at the end: seen now
            if s == 0:  # inside the band: keep the old side
                if previous is not None:
                    self._side[tid] = previous
                continue
            if previous is not None and previous[0] != s and self._on_segment(previous[1:], (x, y)):
                direction = "in" if s > 0 else "out"
                self.counts[direction] += 1
                payload = {"line": self.name, "direction": direction}
                events.append(at.event(self.name, "line_cross", tid, cid, payload))
            self._side[tid] = (s, x, y)
        while len(self._side) > MAX_TRACKS:
            del self._side[next(iter(self._side))]
        return events

    def _on_segment(self, before, now) -> bool:
        """Whether the way from point `before` to point `now` (on opposite sides of the line) meets the segment."""
        dist, along = signed_distance(np.array([before, now]), self.config.start, self.config.end)
        share = dist[0] / (dist[0] - dist[1])  # where along the way it meets the line
        return 0.0 <= along[0] + share * (along[1] - along[0]) <= 1.0

    def forget_tracks(self) -> None:
        """The stream restarted: no track is on either side (its counts stay)."""
        self._side.clear()
