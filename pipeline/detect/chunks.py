"""Running a batch through a detect step in chunks the engine can take."""
from __future__ import annotations

import numpy as np

from pipeline.types import Detections


def in_chunks(items, size: int, detect) -> tuple[Detections, np.ndarray, np.ndarray]:
    """Run `detect(chunk) -> (Detections, scale, pad)` on chunks of at most `size` items and join the
    results, with frame_idx counted over all items."""
    parts, scales, pads = [], [], []
    for start in range(0, len(items), size):
        found, scale, pad = detect(items[start : start + size])
        found.frame_idx += start
        parts.append(found)
        scales.append(scale)
        pads.append(pad)
    if not parts:
        return Detections.empty(), np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return Detections.concat(parts), np.concatenate(scales), np.concatenate(pads)
