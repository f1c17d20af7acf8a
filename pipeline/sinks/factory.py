"""Builds the sinks, the event outbox and the per-stream stages a PipelineConfig asks for."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from pipeline.config import models as cfg
from pipeline.errors import SinkError
from pipeline.sinks.base import Sink, StreamStage
from pipeline.types import Event

log = logging.getLogger(__name__)

class Outputs:
    """The shared sinks, the durable outbox in front of the event outputs, and the packet rings clips are cut from."""

    def __init__(self, sinks: list[Sink], outbox=None, rings=None):
        """rings: the `PacketRings` the decode workers feed through `packet_tap` (None: no event clips)."""
        self.sinks = sinks
        self.outbox = outbox
        self.rings = rings
        self.packet_tap = rings.tap if rings is not None else None
        self._final_stats: dict[str, dict] | None = None

    def open(self) -> None:
        if self.outbox is not None:
            self.outbox.open()

    def publish_events(self, events: list[Event], attempts: int = 8) -> None:
        """Store events in the outbox; a store that fails (disk full, database locked) is retried
        with backoff (about 25 s in all) before the failure reaches the caller, which counts it."""
        if self.outbox is None:
            return
        for attempt in range(attempts):
            try:
                self.outbox.put(events)
                return
            except SinkError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("outbox: %s; retrying in %.1f s", exc, 0.1 * 2**attempt)
                time.sleep(0.1 * 2**attempt)

    def stats(self) -> dict[str, dict]:
        if self._final_stats is not None:
            return self._final_stats
        parts = [*self.sinks, *([self.outbox] if self.outbox is not None else [])]
        stats = {part.name: part.stats() for part in parts if hasattr(part, "stats")}
        if self.rings is not None:
            stats["packet_rings"] = self.rings.stats()
        return stats

    def close(self, timeout: float = 5.0) -> None:
        """Write the clips still collecting (call this after the sinks closed: the media sink counts
        them as they finish), give the outputs `timeout` seconds to take the backlog, then stop the
        outbox couriers; events not yet delivered stay on disk and go out on the next start."""
        if self.rings is not None:
            self.rings.close()
        if self.outbox is not None and not self.outbox.wait_delivered(timeout):
            pending = {name: s["pending"] for name, s in self.outbox.stats().items() if s["pending"]}
            log.warning("outputs still unreachable after %.0f s; events kept in the outbox for the next start: %s",
                        timeout, pending)
        self._final_stats = self.stats()
        if self.outbox is not None:
            self.outbox.close()


def build_outputs(config: cfg.PipelineConfig, class_names: list[str]) -> Outputs:
    """Sinks in config order; webhook, MQTT and event-log outputs go behind one outbox."""
    from pipeline.sinks.outbox import Outbox
    from pipeline.sinks.outputs import build_event_outputs

    urls = {s.id: s.url for s in config.streams}
    sinks: list[Sink] = []
    rings = _packet_rings(config)
    for entry in config.sinks:
        sink = _build_sink(entry, config, class_names, urls, rings)
        if sink is not None:
            sinks.append(sink)
    event_outputs = build_event_outputs(config.sinks)
    outbox = Outbox(Path(config.runtime.outbox_path), event_outputs) if event_outputs else None
    return Outputs(sinks, outbox, rings)


def _packet_rings(config: cfg.PipelineConfig):
    """One `PacketRings` for the media sinks when an alert rule asks for clips, else None (no packets kept)."""
    media = [entry for entry in config.sinks if isinstance(entry, cfg.MediaOutput)]
    if not media or not any(rule.clip for rule in config.alerts):
        return None
    from pipeline.sources.packets import PacketRings

    # 5 s of slack: events reach the sinks later than their packets reach the rings
    return PacketRings(keep_s=max(entry.clip_before_s for entry in media) + 5.0)


def _build_sink(entry, config: cfg.PipelineConfig, class_names: list[str], urls: dict[str, str],
                rings=None) -> Sink | None:
    if isinstance(entry, cfg.SqliteStorage):
        from pipeline.sinks.storage.sqlite import SqliteSink

        return SqliteSink(entry, class_names, stream_urls=urls)
    if isinstance(entry, cfg.PostgresStorage):
        from pipeline.sinks.storage.postgres import PostgresSink

        return PostgresSink(entry, class_names, stream_urls=urls)
    if isinstance(entry, cfg.JsonlOutput) and entry.what == "detections":
        from pipeline.sinks.jsonl import JsonlSink

        return JsonlSink(entry, class_names)
    if isinstance(entry, cfg.MediaOutput):
        from pipeline.sinks.media import MediaSink

        return MediaSink(entry, config.alerts, clips=rings)
    if isinstance(entry, cfg.MotExport):
        from pipeline.sinks.mot_export import MotExportSink

        return MotExportSink(entry)
    return None  # an event output: delivered through the outbox


def build_stage_factory(config: cfg.PipelineConfig, class_names: list[str]) -> Callable[[str], list[StreamStage]]:
    """A function giving each stream its own tracker and analytics (zones, lines, alert rules)."""

    def stages_for(stream_id: str) -> list[StreamStage]:
        stages: list[StreamStage] = []
        if config.tracker.enabled:
            from pipeline.stages.tracking.stage import TrackingStage

            stages.append(TrackingStage(config.tracker))
        zones = [z for z in config.zones if z.streams is None or stream_id in z.streams]
        lines = [ln for ln in config.lines if ln.streams is None or stream_id in ln.streams]
        if zones or lines:
            from pipeline.stages.analytics.stage import AnalyticsStage

            stages.append(AnalyticsStage(stream_id, zones, lines, list(config.alerts), class_names))
        return stages

    return stages_for
