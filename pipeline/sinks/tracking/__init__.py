"""Multi-object tracking: ByteTrack-style tracker, its StreamStage, MOTChallenge I/O and CLI."""
from pipeline.sinks.tracking.bytetrack import ByteTracker
from pipeline.sinks.tracking.stage import TrackingStage

__all__ = ["ByteTracker", "TrackingStage"]
