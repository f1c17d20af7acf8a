"""`Snapshot`: what the pipeline is doing right now, for the live view, the summary, metrics and /status."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.runtime.build import Pipeline


@dataclass
class Snapshot:
    """streams: per stream, the source's counters and state, the buffer's (received, batched, drops, depth),
    `staged` (frames through the stages) and `dropped_sinks` (frames sinks dropped to keep up). stage_depths:
    results waiting per stage worker. sinks: per frame sink, its counters, `queued` and `dropped` per stream.
    sink_failures: failures per stage, sink and outbox (each isolated). extra: run_id, failed_batches, outbox (per
    event output: delivered, failed, dead, pending), events (published, stored, waiting), packet_rings and,
    in the final one, shutdown_s."""

    elapsed_s: float  # from start until the last batch was detected (shutdown is in extra["shutdown_s"])
    streams: dict[str, dict]
    lanes: dict[str, dict]
    batches: int
    frames_detected: int
    detections: int
    events: int
    stage_depths: list[int]
    sinks: dict[str, dict]
    sink_failures: dict[str, int]
    engine: str
    infer_s: float
    extra: dict = field(default_factory=dict)


def take_snapshot(parts: Pipeline, elapsed_s: float) -> Snapshot:
    buffer = parts.buffer.stats()
    sinks = parts.outputs.stats()
    staged = parts.stages.frames()
    dropped = Counter()
    for stats in sinks.values():
        dropped.update(stats["dropped"])
    streams = {sid: {**stats, **buffer["streams"].get(sid, {}), "staged": staged.get(sid, 0),
                     "dropped_sinks": dropped[sid]} for sid, stats in parts.sources.stats().items()}
    events = parts.events.stats()
    inference = parts.inference
    return Snapshot(
        elapsed_s=elapsed_s,
        streams=streams,
        lanes=buffer["lanes"],
        batches=inference.batches,
        frames_detected=inference.frames,
        detections=inference.detections,
        events=events["published"],
        stage_depths=parts.stages.depths(),
        sinks=sinks,
        sink_failures=parts.outputs.failures.counts(),
        engine=parts.detector.engine_name,
        infer_s=inference.infer_s,
        extra={"run_id": parts.run.run_id, "instance": parts.run.instance, "failed_batches": inference.failed_batches,
               "outbox": events.pop("outputs"), "events": events,
               "packet_rings": parts.sources.packet_stats()},
    )
