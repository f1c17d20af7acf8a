"""Zone and line analytics on tracked detections (`stage.AnalyticsStage`)."""
