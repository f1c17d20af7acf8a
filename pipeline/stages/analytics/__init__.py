"""Zone and line analytics on tracked detections."""
from pipeline.stages.analytics.stage import AnalyticsStage

__all__ = ["AnalyticsStage"]
