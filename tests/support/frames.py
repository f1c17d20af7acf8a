"""Real frames as a detector's input, for tests that compare engines on the same batch."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from pipeline.detect import preprocess


def letterboxed(clip: Path, size: int, count: int = 2) -> np.ndarray:
    """The first `count` frames of `clip`, letterboxed to (count, 3, size, size) float32 RGB / 255 as the
    detector feeds them."""
    with av.open(str(clip)) as container:
        decoded = (f.to_ndarray(format="rgb24") for f in container.decode(video=0))
        frames = [next(decoded) for _ in range(count)]
    spec = preprocess.PreprocessSpec(size, size, align="center", color="rgb", scale=1 / 255)
    batch = preprocess.allocate(count, spec)
    preprocess.preprocess_into(frames, spec, batch)
    return batch
