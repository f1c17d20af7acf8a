"""TrackingStage: the per-stream StreamStage that finds the tracks and gives detections their track ids."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.bytetrack import ByteTracker
from pipeline.stages.tracking.ids import TrackIds
from pipeline.types import Event, FrameResult, Moment


class TrackingStage:
    """Sets `result.tracks` to the tracks reported on the frame (see ByteTracker for which rows those are), the
    `track_id` of each detection matched to one of them (the detections keep their boxes and scores), and
    `result.ended_tracks` to the ids of the tracks it gave up on the frame.

    One instance per stream (it holds that stream's tracks; `ids` its id counter, which may outlive it; a file
    that loops or a camera that reconnects, a new `frame.epoch`, starts with no tracks, and its ids go on). A gap in `frame.seq`
    (frames dropped upstream) is bridged by predicting the tracks through the missing frames, so motion
    stays consistent with the stream's frame rate, and a track unseen for longer than `max_lost_frames` ends.
    With `camera_motion` in the config, each frame's picture (a small grey copy, see `camera_motion.small_grey`)
    gives the camera's motion, and the tracks move with it.
    """

    name = "tracker"

    def __init__(self, config: TrackerConfig | None = None, ids: TrackIds | None = None):
        self.tracker = ByteTracker(config, ids)
        self.camera = None
        if self.tracker.config.camera_motion:  # OpenCV, an optional dependency (TrackerConfig checks it is there)
            from pipeline.stages.tracking.camera_motion import CameraMotion  # noqa: PLC0415

            self.camera = CameraMotion()
        self._last_seq: int | None = None
        self._last_pts_ns: int | None = None
        self._last_epoch: int | None = None

    def process(self, result: FrameResult) -> None:
        seq, pts_ns, epoch = result.frame.seq, result.frame.pts_ns, result.frame.epoch
        alive = self.tracker.active_track_ids
        if self._last_seq is not None:
            if epoch != self._last_epoch or seq <= self._last_seq or pts_ns < self._last_pts_ns:
                self._reset()  # the stream restarted (file loop or reconnect): old tracks are void
            elif seq > self._last_seq + 1:
                self.tracker.skip(seq - self._last_seq - 1)
        self._last_seq, self._last_pts_ns, self._last_epoch = seq, pts_ns, epoch
        detections = result.detections.to_host()
        motion = None
        if self.camera is not None and result.frame.image is not None:
            motion = self.camera.of_frame(result.frame)
        result.tracks = self.tracker.update(detections, motion)
        detections.track_id = self.tracker.matched_ids
        result.ended_tracks = np.setdiff1d(alive, self.tracker.active_track_ids, assume_unique=True)
        result.detections = detections

    def end(self, at: Moment) -> list[Event]:
        self._reset()
        self._last_seq = self._last_pts_ns = None
        return []

    def _reset(self) -> None:
        self.tracker.reset()
        if self.camera is not None:
            self.camera.reset()
