"""The tracker's settings (`tracker:` in YAML); docs/TRACKING.md says what each does and how it was chosen."""
from __future__ import annotations

import importlib
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.fields import KeyPathError, Strict


class TrackerConfig(Strict):
    enabled: bool = True
    high_threshold: float = Field(0.4, ge=0, le=1, description="detections above this start and first-match tracks")
    low_threshold: float = Field(0.1, ge=0, le=1, description="second association stage uses detections above this")
    new_track_threshold: float = Field(0.5, ge=0, le=1, description="unmatched detections above this start a track")
    # Above 0: boxes that do not touch (or of other classes) have similarity 0, which a minimum of 0 would match.
    match_iou: float = Field(0.2, gt=0, le=1, description="minimum IoU x detection score for the first association")
    low_match_iou: float = Field(0.5, gt=0, le=1, description="minimum IoU for low-score detections; higher keeps "
                                 "clutter off tracks")
    low_scores: Literal["adaptive", "separate", "joint"] = Field("adaptive", description="separate: low-score detections "
        "only continue tracks, at `low_match_iou` (ByteTrack); joint: all matched at IoU >= 0.3, tracks start from 0.25 "
        "(SORT); adaptive: joint while most low-score detections lie on confirmed tracks, else separate")
    max_lost_frames: int = Field(30, ge=0, le=100_000, description="a track unseen this many frames is ended")
    min_hits: int = Field(2, ge=1, le=1000, description="frames before a new track is reported")
    coast_frames: int = Field(
        3, ge=0, le=100_000, description="report a lost track's predicted box (score 0) for this many frames; bridges missed detections, 0 = detected rows only"
    )
    recovery: bool = Field(False, description="match lost tracks on the box they were last seen at too (OC-SORT); "
                           "re-finds objects that stopped while hidden, takes a neighbour's detection in crowds")
    recovery_iou: float = Field(0.5, gt=0, le=1, description="with `recovery`: minimum IoU of a lost track's last "
                                "seen box with a high-score detection")
    follow_shared_motion: bool = Field(True, description="tracks no detection matched move by the shift the matched "
                                       "ones share, and all tracks go on moving with a clear one (a moving camera, "
                                       "measured without the picture); a still camera moves nothing")
    drift_scale: float = Field(1.0, ge=0, le=100, description="a lost track that the camera's changes of speed "
                               "moved this far (box heights) while it was unseen keeps only e^-1 of its first-stage "
                               "similarity above the match threshold, so a stale duplicate left behind by an unevenly "
                               "moving camera loses a contested detection to a recent track; smaller favours recent "
                               "tracks sooner; a still camera moves nothing; no effect with camera_motion; 0 = off")
    reanchor: bool = Field(False, description="a track found after a gap takes its velocity from its observations "
                           "either side of the gap instead of the blind prediction (OC-SORT)")
    class_aware: bool = Field(True, description="a detection only matches a track of its class; off for a "
                              "detector that flips between similar classes (car/truck)")
    camera_motion: bool = Field(False, description="estimate the camera's motion from each frame (sparse optical "
                                "flow on a small grey copy; OpenCV, the 'motion' extra) and move the tracks with it; "
                                "for moving cameras, ~2 ms a frame")

    @field_validator("camera_motion")
    @classmethod
    def _opencv_installed(cls, value: bool) -> bool:
        if value:
            try:  # imported, not only looked up: an OpenCV wheel without its system libraries fails here too
                importlib.import_module("cv2")
            except ImportError as exc:
                raise ValueError(f"needs OpenCV, which cannot be imported here ({exc}): "
                                 "pip install 'streamweave[motion]'") from exc
        return value

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "TrackerConfig":
        if self.low_threshold > self.high_threshold:
            raise KeyPathError(("low_threshold",), f"{self.low_threshold:g} is above high_threshold "
                               f"({self.high_threshold:g}): the second association takes the detections between them")
        return self
