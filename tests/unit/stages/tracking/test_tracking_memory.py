"""A tracker on an endless stream holds the tracks alive now, however many came and went."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.bytetrack import ByteTracker
from pipeline.types import Detections


def passer_by(i: int, frame: int) -> list[float]:
    """Object i walks right on frames 20i .. 20i + 19, on its own row, then leaves."""
    x, y = 20 + 4 * (frame - 20 * i), 40 + 60 * (i % 6)
    return [x, y, x + 40, y + 50]


def test_thousands_of_tracks_that_come_and_go_leave_only_the_live_ones():
    config = TrackerConfig()
    tracker = ByteTracker(config)
    ids = set()
    for frame in range(20 * 1000):  # 1,000 objects, one after another, ~3 visible at a time
        visible = [i for i in range(max(0, frame // 20 - 3), frame // 20 + 1) if 0 <= frame - 20 * i < 20]
        boxes = np.array([passer_by(i, frame) for i in visible], np.float32).reshape(-1, 4)
        out = tracker.update(Detections(boxes, np.full(len(visible), 0.9, np.float32), np.zeros(len(visible), np.int32)))
        ids.update(out.track_id.tolist())
        assert len(tracker._id) <= len(visible) + 4 * (config.max_lost_frames + 1)
    assert len(ids) >= 1000  # each object became a track: they were really tracked, then forgotten
