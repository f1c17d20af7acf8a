"""An example per-frame Python stage (`stages:` in a config): how fast tracked objects move.

    stages:
      - python: samples.stages:SpeedLimit
        options: {limit_px_s: 120, classes: [2, 5, 7]}

Each track row (`result.tracks`) gets a `speed_px_s` attribute: its box's bottom-centre speed in source
pixels per second between its last two frames; a track faster than the limit gives one `speeding` event.
"""
from __future__ import annotations

import numpy as np

from pipeline.types import Event, FrameResult


class SpeedLimit:
    """stream_id: the stream this instance serves (each frame's `result.moment` names it too, and so the
    events made from it). limit_px_s: speed above which a track is reported.
    classes: class ids to watch (None = all)."""

    def __init__(self, stream_id: str, limit_px_s: float, classes: list[int] | None = None):
        self.limit_px_s = limit_px_s
        self.classes = None if classes is None else set(classes)
        self._last: dict[int, tuple[int, float, float]] = {}  # track -> (pts_ns, x, y)
        self._reported: set[int] = set()

    def __call__(self, result: FrameResult) -> list[Event]:
        dets = result.tracks
        ts = result.frame.pts_ns
        x = (dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2
        y = dets.xyxy[:, 3]
        speeds = np.zeros(len(dets), np.float32)
        events = []
        for row, (track, cls) in enumerate(zip(dets.track_id.tolist(), dets.class_id.tolist())):
            if track < 0:
                continue
            last = self._last.get(track)
            self._last[track] = (ts, float(x[row]), float(y[row]))
            if last is None or ts <= last[0]:
                continue
            speeds[row] = np.hypot(x[row] - last[1], y[row] - last[2]) * 1e9 / (ts - last[0])
            watched = self.classes is None or cls in self.classes
            if watched and speeds[row] > self.limit_px_s and track not in self._reported:
                self._reported.add(track)
                events.append(result.moment.event("speeding", "speeding", track, cls,
                                                  {"speed_px_s": round(float(speeds[row]), 1)}))
        dets.add_attribute("speed_px_s", speeds)
        live = set(dets.track_id.tolist())
        self._last = {track: seen for track, seen in self._last.items() if track in live}  # bounded per stream
        self._reported &= live
        return events
