"""Camera motion between consecutive frames of one stream, for trackers on moving cameras.

A moving camera shifts every object on screen at once; a constant-velocity Kalman filter sees that as
sudden motion and loses the tracks. `CameraMotion.estimate` measures the shift from sparse optical flow
(Shi-Tomasi corners, pyramidal Lucas-Kanade) on a small grey copy of the frame and fits a similarity
(rotation, uniform scale, translation) with RANSAC, as BoT-SORT does; `ByteTracker.update(..., camera_motion=)`
moves the tracks with it. About 2 ms per frame of one core at the default 320-pixel width.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.types import Frame

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
_MIN_POINTS = 12  # fewer tracked corners than this (a blank or cut frame): no estimate, assume still


def small_grey(frame: Frame, max_width: int = 320) -> tuple[np.ndarray, float]:
    """A grey copy of the frame at most `max_width` wide, by striding (no filtering: cheap, and enough for
    corners), and the factor from its pixels to the frame's. Works for host RGB, NV12 (host or device: only
    the strided luma plane is copied) and PyAV frames."""
    step = max(1, -(-frame.width // max_width))
    image = frame.image
    if frame.pixel_format == "nv12":
        luma = image[: frame.height : step, ::step]
        grey = luma.get() if hasattr(luma, "get") else luma  # cupy -> numpy, only the small plane
    elif frame.pixel_format == "avframe":
        grey = image.reformat(width=frame.width // step, height=frame.height // step, format="gray").to_ndarray()
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(grey, np.uint8), float(step)


class CameraMotion:
    """Estimates one stream's camera motion frame to frame. One instance per stream; `reset()` when the
    stream restarts."""

    def __init__(self, max_corners: int = 200):
        self.max_corners = max_corners
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def of_frame(self, frame: Frame) -> np.ndarray:
        """`estimate` on the frame's small grey copy (`small_grey`)."""
        return self.estimate(*small_grey(frame))

    def estimate(self, grey: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """(2, 3) float64 affine from the previous frame's pixels to this one's (full-size pixels, `scale`
        = full pixels per pixel of `grey`). The identity for the first frame, after a size change, or when
        too few corners can be followed."""
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return IDENTITY.copy()
        corners = cv2.goodFeaturesToTrack(previous, self.max_corners, 0.01, 8, blockSize=3)
        if corners is None or len(corners) < _MIN_POINTS:
            return IDENTITY.copy()
        moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, grey, corners, None, winSize=(15, 15), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() < _MIN_POINTS:
            return IDENTITY.copy()
        affine, _ = cv2.estimateAffinePartial2D(corners[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if affine is None:
            return IDENTITY.copy()
        affine = affine.astype(np.float64)
        affine[:, 2] *= scale
        return affine
