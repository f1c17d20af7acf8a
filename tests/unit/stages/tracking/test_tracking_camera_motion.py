"""Camera-motion estimation on real pixel content, and the TrackingStage using it on a panning camera."""
import cv2
import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.camera_motion import CameraMotion, small_grey
from pipeline.stages.tracking.stage import TrackingStage
from pipeline.types import Detections, Frame, FrameResult

W, H = 640, 360


def scenery(width=1400, height=500, seed=0):
    """A textured landscape larger than the frame, RGB uint8."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def view(world, x, y):
    """The camera's frame when its top-left corner looks at world pixel (x, y)."""
    return np.ascontiguousarray(world[y:y + H, x:x + W])


def frame(seq, image, fmt="rgb24"):
    return Frame("cam-1", seq, seq * 40_000_000, 0, image, W, H, pixel_format=fmt, index=seq)


def test_estimates_a_pan_as_the_opposite_shift_of_the_picture():
    world = scenery()
    motion = CameraMotion()
    assert np.array_equal(motion.estimate(*small_grey(frame(0, view(world, 100, 50)))), np.eye(2, 3))  # first frame
    affine = motion.estimate(*small_grey(frame(1, view(world, 108, 44))))  # camera moved right 8, up 6
    np.testing.assert_allclose(affine[:, :2], np.eye(2), atol=0.02)
    np.testing.assert_allclose(affine[:, 2], [-8.0, 6.0], atol=1.0)


def test_small_grey_reads_only_the_luma_of_nv12_frames():
    rgb = view(scenery(), 0, 0)
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    nv12 = np.concatenate([luma, np.full((H // 2, W), 128, np.uint8)])
    grey, scale = small_grey(frame(0, nv12, "nv12"))
    assert scale == 2.0 and grey.shape == (H // 2, W // 2)
    np.testing.assert_array_equal(grey, luma[::2, ::2])


def test_a_blank_picture_gives_no_motion():
    motion = CameraMotion()
    blank = np.zeros((H, W, 3), np.uint8)
    motion.estimate(*small_grey(frame(0, blank)))
    assert np.array_equal(motion.estimate(*small_grey(frame(1, blank))), np.eye(2, 3))


def test_tracking_stage_keeps_ids_through_a_fast_pan_only_with_camera_motion():
    world = scenery()

    def ids(camera_motion):
        stage = TrackingStage(TrackerConfig(camera_motion=camera_motion, coast_frames=0))
        out = []
        for seq in range(12):
            cam_x = 40 * seq  # the camera pans 40 px a frame; a person stands still at world x = 600
            x = 600.0 - cam_x
            dets = Detections(np.array([[x, 150, x + 30, 230]], np.float32), np.array([0.9], np.float32),
                              np.zeros(1, np.int32))
            result = FrameResult(frame(seq, view(world, cam_x, 60)), dets, run_id="run-1")
            stage.process(result)
            out.append(result.detections.track_id.tolist())
        return out

    assert ids(True)[1:] == [[1]] * 11
    assert [1] not in ids(False)[2:]  # every frame the box has moved more than its width: never the same track
