"""Per-stream stages, in order: the tracker, zone/line analytics with alert rules, `stages:` plugins."""
from __future__ import annotations

from pipeline.config.models import PipelineConfig
from pipeline.stages.base import StreamStage

__all__ = ["StreamStage", "build_stages"]


def build_stages(config: PipelineConfig, stream_id: str, class_names: list[str]) -> list[StreamStage]:
    """The stages of one stream, made fresh (they hold that stream's state). Raises ConfigError when a
    `stages:` plugin cannot be made with its options."""
    from pipeline.stages.analytics.stage import AnalyticsStage  # noqa: PLC0415 - numpy-heavy, loaded when used
    from pipeline.stages.python import PythonStage  # noqa: PLC0415
    from pipeline.stages.tracking.stage import TrackingStage  # noqa: PLC0415

    stages: list[StreamStage] = [TrackingStage(config.tracker)] if config.tracker.enabled else []
    zones = [z for z in config.zones if z.streams is None or stream_id in z.streams]
    lines = [ln for ln in config.lines if ln.streams is None or stream_id in ln.streams]
    if zones or lines:
        stages.append(AnalyticsStage(stream_id, zones, lines, list(config.alerts), class_names))
    stages += [PythonStage(s, stream_id) for s in config.stages if s.streams is None or stream_id in s.streams]
    return stages
