"""Per-stream stages, in order: the tracker, zone/line analytics with alert rules, `stages:` plugins."""
from __future__ import annotations

import logging

from pipeline.config.models import PipelineConfig
from pipeline.stages.base import StreamStage
from pipeline.stages.tracking.ids import TrackIds
from pipeline.types import Event, Moment

__all__ = ["StreamStage", "TrackIds", "build_stages", "discard", "restage"]

log = logging.getLogger(__name__)


def build_stages(config: PipelineConfig, stream_id: str, class_names: list[str],
                 track_ids: TrackIds | None = None) -> list[StreamStage]:
    """The stages of one stream, made fresh (they hold that stream's state). track_ids: the stream's track id
    counter for the run (a restarted stream's new tracker goes on from it). Raises ConfigError when a
    `stages:` plugin cannot be made with its options (the plugins made before it closed); stages that will not run
    go to `discard`."""
    from pipeline.stages.analytics.stage import AnalyticsStage  # noqa: PLC0415 - numpy-heavy, loaded when used
    from pipeline.stages.tracking.stage import TrackingStage  # noqa: PLC0415

    stages: list[StreamStage] = [TrackingStage(config.tracker, ids=track_ids)] if config.tracker.enabled else []
    zones, lines = _mine(config.zones, stream_id), _mine(config.lines, stream_id)
    if zones or lines:
        stages.append(AnalyticsStage(stream_id, zones, lines, list(config.alerts), class_names))
    return stages + _plugins(config, stream_id, [])


def restage(config: PipelineConfig, stream_id: str, class_names: list[str], stages: list[StreamStage],
            at: Moment) -> tuple[list[StreamStage], list[Event]]:
    """A running stream's stages for a config whose zones, lines, alert rules or `stages:` changed (the
    tracker's did not), and the events of what ended (zone visits closed, plugins removed) at the stream's last
    frame `at`. The tracker and every unchanged part keep their state (see `AnalyticsStage.reconfigure`); only new
    plugins are made, first: one that cannot be made raises, and the stream's stages are as they were."""
    from pipeline.stages.analytics.stage import AnalyticsStage  # noqa: PLC0415
    from pipeline.stages.python import PythonStage  # noqa: PLC0415

    plugins = [stage for stage in stages if isinstance(stage, PythonStage)]
    wanted = _plugins(config, stream_id, plugins)
    events: list[Event] = []
    zones, lines, rules = _mine(config.zones, stream_id), _mine(config.lines, stream_id), list(config.alerts)
    analytics = [stage for stage in stages if isinstance(stage, AnalyticsStage)]
    for stage in analytics:
        events += stage.reconfigure(zones, lines, rules, at)
    if not analytics and (zones or lines):
        analytics = [AnalyticsStage(stream_id, zones, lines, rules, class_names)]
    for gone in plugins:
        events += _ended(gone, stream_id, at)
    tracker = [stage for stage in stages if stage.name == "tracker"]
    return [*tracker, *(analytics if zones or lines else []), *wanted], events


def _plugins(config: PipelineConfig, stream_id: str, running: list) -> list:
    """The stream's `stages:` plugins for `config`: those `running` it keeps (taken out of that list) and new ones.
    One that cannot be made raises, the new ones made before it closed."""
    from pipeline.stages.analytics.stage import alike_but_streams  # noqa: PLC0415
    from pipeline.stages.python import PythonStage  # noqa: PLC0415

    wanted, made = [], []
    try:
        for stage_config in _mine(config.stages, stream_id):
            same = next((stage for stage in running if alike_but_streams(stage.config, stage_config)), None)
            if same is None:
                made.append(PythonStage(stage_config, stream_id))
            else:
                running.remove(same)
            wanted.append(same if same is not None else made[-1])
    except BaseException:
        discard(made, stream_id)
        raise
    return wanted


def discard(stages: list[StreamStage], stream_id: str) -> None:
    """Close the plugins of stages made but never run (a check's, or those made before another failed): what
    their constructors opened (a file, a connection, a thread) is not left open."""
    for stage in stages:
        close = getattr(stage, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - the user's code; the others are closed all the same
                log.exception("stage '%s' of stream '%s' failed to close", stage.name, stream_id)


def _ended(stage: StreamStage, stream_id: str, at: Moment) -> list[Event]:
    """A removed plugin's final events. One whose `close` fails is logged and taken out all the same: the stream's
    zones and lines have changed already, and failing the change would keep it running and lose their events."""
    try:
        return stage.end(at)
    except Exception:  # noqa: BLE001 - the user's code; the change goes on
        log.exception("stage '%s' of stream '%s' failed to close; it is taken out all the same", stage.name, stream_id)
        return []


def _mine(items: list, stream_id: str) -> list:
    return [item for item in items if item.streams is None or stream_id in item.streams]

