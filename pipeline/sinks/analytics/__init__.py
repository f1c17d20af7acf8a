"""Zone and line analytics on tracked detections."""
from pipeline.sinks.analytics.stage import AnalyticsStage

__all__ = ["AnalyticsStage"]
