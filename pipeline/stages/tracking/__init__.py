"""Multi-object tracking: ByteTrack-style tracker, its StreamStage, MOTChallenge I/O and CLI."""
from pipeline.stages.tracking.bytetrack import ByteTracker
from pipeline.stages.tracking.stage import TrackingStage

__all__ = ["ByteTracker", "TrackingStage"]
