"""The camera's motion measured from the tracks themselves (`follow_shared_motion`), and what it costs a lost track
that it moved (`drift_scale`).

When the camera pans, every detection moves by the same amount the predictions did not expect: the median of the
matched tracks' innovations measures it without the picture. A frame's statistics are a handful of numbers, so they
are worked out on Python floats: numpy's per-call cost would be most of the work.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.stages.tracking import kalman

MIN_PAIRS = 3  # first-stage matches needed to measure a shared shift
# Standard errors a shared shift must exceed (tune split: 2 gave back a third of the gain on a moving camera).
SIGNIFICANCE = 1.0
# Standard errors a shared shift must exceed to be taken as the camera's (every track moves with it, and on):
# on the tune split 1.5 cost the demo world 0.1 HOTA and IDF1, 2 leaves it unchanged.
VELOCITY_SIGNIFICANCE = 2.0
MIN_DRIFT_WEIGHT = 1e-6  # a feasible pair stays below the gate: at the gate the solver may leave it unmatched


def shared_shift(stack: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The shift the matched tracks share, and the part of it that is the camera's, as (dx, dy) pixel pairs; None
    when it is noise.

    stack: (K, 5) float64, K >= `MIN_PAIRS`, one row per matched track: its innovation (x, y; detection minus
    prediction, pixels), its predicted position variance (x, y) and its height. A shift within `SIGNIFICANCE`
    standard errors is 0; beyond `VELOCITY_SIGNIFICANCE` it is the camera's. The standard error is the innovations'
    spread, but never less than the filter expects of one (few tracks can agree by chance: its predicted position
    variance plus the measurement's), over the square root of K.
    """
    medians = column_medians(stack)
    shift = medians[:2]
    mad = column_medians(np.abs(stack[:, :2] - shift)).tolist()
    sx, sy, var_x, var_y, height = medians.tolist()
    measured = (kalman.STD_MEASUREMENT * height) ** 2
    root_k = math.sqrt(len(stack))
    stderr_x = max(1.4826 * mad[0], math.sqrt(var_x + measured)) / root_k
    stderr_y = max(1.4826 * mad[1], math.sqrt(var_y + measured)) / root_k
    sx = 0.0 if abs(sx) <= SIGNIFICANCE * stderr_x else sx
    sy = 0.0 if abs(sy) <= SIGNIFICANCE * stderr_y else sy
    if sx == 0.0 and sy == 0.0:
        return None
    camera = (sx if abs(sx) > VELOCITY_SIGNIFICANCE * stderr_x else 0.0,
              sy if abs(sy) > VELOCITY_SIGNIFICANCE * stderr_y else 0.0)
    return (sx, sy), camera


def drift_weight(drift: np.ndarray, lost: np.ndarray, scale: float) -> np.ndarray | None:
    """(T,) weight of each track's similarity margin above the gate, exp(-(drift / `scale`)^2) for a track unseen on
    the previous frame too (`lost` > 1); None when every weight is 1 (a still camera, or `scale` 0).

    drift: (T,) box heights the shared motion moved each track by since its last match. A constant decay per frame
    unseen cannot tell a hidden person coming back from a stale duplicate (tune split: x 0.97 a frame cost the still
    cameras' detector-like noise 1.0 IDF1); the camera's motion while the track was unseen can: on a still camera it
    is zero.
    """
    if scale <= 0:
        return None
    drift = drift * (lost > 1)
    if not drift.any():
        return None
    return np.maximum(np.exp(-np.square(drift * (1.0 / scale))), MIN_DRIFT_WEIGHT)


def column_medians(a: np.ndarray) -> np.ndarray:
    """Median of each column of (N, K) `a`, N >= 1 (one sort: np.median's overhead is most of a frame's budget)."""
    ordered = np.sort(a, axis=0)
    n = len(ordered)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
