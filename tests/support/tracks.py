"""Hand-made tracked frames for analytics and alert tests."""
from __future__ import annotations

import numpy as np

from pipeline.types import Detections, Frame, FrameResult, Moment

FPS = 10
NS_PER_FRAME = 1_000_000_000 // FPS
CLASS_NAMES = ["person", "bicycle", "car"]
RUN = "20250101T000000.000Z-0000cafe"
WALL_START_NS = 1_735_689_600 * 10**9  # the host clock at frame 0


def feet_box(x: float, y: float, w: float = 20.0, h: float = 60.0) -> list[float]:
    """A box whose bottom centre (the default anchor) is at (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


def tracked_frame(index: int, objects: list[tuple], stream_id: str = "cam-1", run_id: str = RUN) -> FrameResult:
    """objects: (track_id, x, y[, class_id[, score]]) anchor positions of the tracks, each detected too; pts =
    index / FPS seconds, captured (wall clock) that long after WALL_START_NS."""
    boxes = [feet_box(o[1], o[2]) for o in objects]
    classes = [o[3] if len(o) > 3 else 0 for o in objects]
    scores = [o[4] if len(o) > 4 else 0.9 for o in objects]
    dets = Detections(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes, np.int32),
        track_id=np.array([o[0] for o in objects], np.int64),
    )
    frame = Frame(stream_id, index, index * NS_PER_FRAME, WALL_START_NS + index * NS_PER_FRAME, None, 640, 480,
                  index=index)
    return FrameResult(frame, dets, run_id=run_id, tracks=dets)


def moment(index: int, run_id: str = RUN) -> Moment:
    """The moment of frame `index` of 'cam-1' (a stream's end after that frame)."""
    return tracked_frame(index, [], run_id=run_id).moment


def run(stage, frames: list[list[tuple]], run_id: str = RUN) -> list:
    """Feed one list of objects per frame through `stage`; returns every event in order."""
    events = []
    for i, objects in enumerate(frames):
        result = tracked_frame(i, objects, run_id=run_id)
        stage.process(result)
        events += result.events
    return events
