"""Hand-made tracked frames for analytics and alert tests."""
from __future__ import annotations

import numpy as np

from pipeline.types import Detections, Frame, FrameResult

FPS = 10
NS_PER_FRAME = 1_000_000_000 // FPS
CLASS_NAMES = ["person", "bicycle", "car"]


def feet_box(x: float, y: float, w: float = 20.0, h: float = 60.0) -> list[float]:
    """A box whose bottom centre (the default anchor) is at (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


def tracked_frame(index: int, objects: list[tuple], stream_id: str = "cam-1") -> FrameResult:
    """objects: (track_id, x, y[, class_id[, score]]) anchor positions; pts = index / FPS seconds."""
    boxes = [feet_box(o[1], o[2]) for o in objects]
    classes = [o[3] if len(o) > 3 else 0 for o in objects]
    scores = [o[4] if len(o) > 4 else 0.9 for o in objects]
    dets = Detections(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes, np.int32),
        track_id=np.array([o[0] for o in objects], np.int64),
    )
    frame = Frame(stream_id, index, index * NS_PER_FRAME, 0, None, 640, 480)
    return FrameResult(frame, dets)


def run(stage, frames: list[list[tuple]]) -> list:
    """Feed one list of objects per frame through `stage`; returns every event in order."""
    events = []
    for i, objects in enumerate(frames):
        result = tracked_frame(i, objects)
        stage.process(result)
        events += result.events
    return events
