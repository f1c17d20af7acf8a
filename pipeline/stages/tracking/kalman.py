"""Constant-velocity Kalman filter on many boxes at once, in the (cx, cy, a, h) parameterisation.

State per track: `mean (8,) float64` = (cx, cy, aspect w/h, height, and their velocities per frame),
`cov (8, 8) float64`. Every function works on a stack of T tracks at once, so a frame costs a fixed
number of numpy calls whatever the number of tracks. Noise scales with the box height, as in
SORT/DeepSORT/ByteTrack, so small (far) and large (near) objects are filtered alike.
"""
from __future__ import annotations

import numpy as np

STD_POSITION = 1.0 / 20  # position noise as a fraction of box height per frame
STD_VELOCITY = 1.0 / 160  # initial velocity uncertainty as a fraction of box height per frame
# Smoother than SORT/ByteTrack's 1/160 and 1/20: half the velocity change per frame, 1.5 times the
# measurement noise. Chosen on the tune split of benchmarks/track_bench.py (MOT17-02/04/09 with three
# noise models, demo seeds 2001-2003): +1 to +2.4 HOTA on each (docs/TRACKING.md).
STD_VELOCITY_CHANGE = 1.0 / 320  # process noise of the velocity, fraction of box height per frame
STD_MEASUREMENT = 1.5 / 20  # detection box noise as a fraction of box height
# A box's shape changes as its object turns or passes by, the faster the more it moves against its own size: the
# aspect's process variance gains (this x the aspect x the speed in box heights a frame)^2, so a box that stands
# still keeps ByteTrack's nearly fixed aspect. Chosen on the tune split (docs/TRACKING.md): the demo world's
# vehicles, turning at 10 frames/s, +3.0 HOTA / +3.3 IDF1; MOT17's still cameras within 0.3; a moving camera,
# whose pan is speed in the picture too, -0.4 / -0.7.
ASPECT_CHANGE_PER_SPEED = 2.0

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
# Standard deviations as (per-pixel-of-height factor, constant); the aspect ratio gets a constant.
_INIT_STD = (np.array([2, 2, 0, 2, 10, 10, 0, 10]) * np.repeat([STD_POSITION, STD_VELOCITY], 4),
             np.array([0, 0, 1e-2, 0, 0, 0, 1e-5, 0]))
_MOTION_STD = (np.repeat([STD_POSITION, STD_VELOCITY_CHANGE], 4) * np.array([1, 1, 0, 1, 1, 1, 0, 1]),
               np.array([0, 0, 1e-2, 0, 0, 0, 1e-5, 0]))
_MEASURE_STD = (STD_MEASUREMENT * np.array([1, 1, 0, 1]), np.array([0, 0, 1e-1, 0]))


def _diagonal(stack: np.ndarray) -> np.ndarray:
    """Writable (T, K) view of the diagonals of a C-contiguous (T, K, K) stack (fancy indexing copies twice).
    A stack that is not C-contiguous raises rather than giving a copy that writes would be lost in."""
    k = stack.shape[-1]
    flat = stack.view()
    flat.shape = (len(stack), k * k)  # assigning the shape never copies: it raises instead
    return flat[:, :: k + 1]


def _variance(height: np.ndarray, std: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(T,) heights -> (T, K) variances for the diagonal noise `std` = (factor of height, constant)."""
    return (height[:, None] * std[0] + std[1]) ** 2


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 pixels -> (N, 4) float64 centre x, centre y, aspect w/h, height."""
    xyxy = np.asarray(xyxy, np.float64)
    out = np.empty((len(xyxy), 4))
    size = xyxy[:, 2:] - xyxy[:, :2]
    np.maximum(size[:, 1], 1e-6, out=size[:, 1])
    np.multiply(size, 0.5, out=out[:, :2])
    out[:, :2] += xyxy[:, :2]
    np.divide(size[:, 0], size[:, 1], out=out[:, 2])
    out[:, 3] = size[:, 1]
    return out


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, aspect, height -> (N, 4) float64 x1, y1, x2, y2."""
    xyah = np.asarray(xyah, np.float64)
    half = xyah[:, 2:4] * 0.5
    half[:, 0] *= xyah[:, 3]
    return np.concatenate([xyah[:, :2] - half, xyah[:, :2] + half], axis=1)


def initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start tracks from (N, 4) xyah measurements: zero velocity, uncertainty proportional to height.

    Returns mean (N, 8) and cov (N, 8, 8), float64.
    """
    n = len(measurement)
    mean = np.zeros((n, 8))
    mean[:, :4] = measurement
    cov = np.zeros((n, 8, 8))
    _diagonal(cov)[:] = _variance(measurement[:, 3], _INIT_STD)
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Advance (T, 8) means and (T, 8, 8) covariances by one frame; returns new arrays."""
    new_mean = mean @ _F.T
    new_cov = _F @ cov @ _F.T
    noise = _variance(mean[:, 3], _MOTION_STD)
    speed = np.hypot(mean[:, 4], mean[:, 5]) / np.maximum(mean[:, 3], 1.0)  # box heights a frame
    noise[:, 2] += (ASPECT_CHANGE_PER_SPEED * mean[:, 2] * speed) ** 2
    diagonal = _diagonal(new_cov)
    diagonal += noise
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct (T, 8) means / (T, 8, 8) covariances with (T, 4) xyah measurements; returns new arrays."""
    innovation_cov = cov[:, :4, :4].copy()
    diagonal = _diagonal(innovation_cov)
    diagonal += _variance(mean[:, 3], _MEASURE_STD)
    cross = cov[:, :, :4]  # P H^T, (T, 8, 4)
    # K = P H^T S^-1, solved as S K^T = H P (S is symmetric) instead of inverting S.
    gain = np.linalg.solve(innovation_cov, np.swapaxes(cross, 1, 2)).swapaxes(1, 2)
    innovation = measurement - mean[:, :4]
    new_mean = mean + np.einsum("tij,tj->ti", gain, innovation)
    new_cov = cov - gain @ innovation_cov @ np.swapaxes(gain, 1, 2)
    return new_mean, new_cov


def warp(mean: np.ndarray, cov: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move (T, 8) states into the next frame's pixels after the camera moved; returns new arrays.

    affine: (2, 3) float, a point p of the previous frame is `affine[:, :2] @ p + affine[:, 2]` in the
    new one (a similarity: rotation, uniform scale, translation). Centres move with the points, velocities
    turn with the rotation and scale, heights (and their velocities) scale; the aspect is unchanged.
    The covariance is transformed the same way.
    """
    rot = np.asarray(affine, np.float64)[:, :2]
    shift = np.asarray(affine, np.float64)[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(rot))))
    m = np.eye(8)
    m[0:2, 0:2] = rot
    m[4:6, 4:6] = rot
    m[3, 3] = m[7, 7] = scale
    new_mean = mean @ m.T
    new_mean[:, :2] += shift
    return new_mean, m @ cov @ m.T
