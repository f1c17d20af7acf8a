"""`build_pipeline(config, plan)`: the stages of a pipeline, made and wired, not yet started.

    sources ──frames──▶ buffer ──batches──▶ inference ──results──▶ stages ──▶ frame sinks (own queues)
                                                                     └─events─▶ outbox ──▶ event outputs
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.align.buffer import AlignedBuffer
from pipeline.config.models import PipelineConfig
from pipeline.config.outputs import FrameSinkOptions
from pipeline.config.resolve import Plan
from pipeline.detect.detector import Detector
from pipeline.runtime.events import EventPublisher
from pipeline.runtime.inference import Inference
from pipeline.runtime.outputs import Failures, OutputSinks
from pipeline.runtime.runs import new_run
from pipeline.runtime.stage_runner import StageRunner
from pipeline.runtime.telemetry import Telemetry
from pipeline.sinks import build_outputs, close_event_outputs
from pipeline.sinks.base import OutputContext, Sink
from pipeline.sinks.outbox import Outbox
from pipeline.sources.manager import Sources
from pipeline.stages import StreamStage, TrackIds, build_stages
from pipeline.types import Run


@dataclass
class Pipeline:
    """The built stages. `sources` read the streams into `buffer`; `inference` detects its batches and
    hands the results to `stages` (per-stream, in order), which publish events through `events` and pass
    every result to the frame sinks in `outputs`. `telemetry` holds the latency and batch histograms. `run`: this
start of the pipeline, which every result, event and stored row names; `track_ids`: each stream's track id
counter in this run, which its trackers share (a stream restarted while running gives no id twice)."""

    config: PipelineConfig
    plan: Plan
    run: Run
    detector: Detector
    buffer: AlignedBuffer
    sources: Sources
    outputs: OutputSinks
    events: EventPublisher
    stages: StageRunner
    inference: Inference
    telemetry: Telemetry
    track_ids: defaultdict[str, TrackIds]
    fence: Any = None  # in a fleet: what storage asks before writing a camera's rows (`pipeline.cluster.fencing`)


def stage_factory(config: PipelineConfig, class_names: list[str],
                  track_ids: defaultdict[str, TrackIds]) -> Callable[[str], list[StreamStage]]:
    """How `config` makes the stages of a stream (started, or started again) in a run with `track_ids`."""
    return lambda stream_id: build_stages(config, stream_id, class_names, track_ids[stream_id])


def build_pipeline(config: PipelineConfig, plan: Plan, *, detector: Detector | None = None,
                   sinks: list[Sink] = (), on_finished: Callable[[str], None] | None = None,
                   finish_when: Callable[[], bool] = lambda: True, fence: Any = None) -> Pipeline:
    """Make every stage of `config` as `plan` decided. detector: one already loaded (tests, benchmarks).
    sinks: frame sinks beyond the configured ones (default queue options). on_finished(stream_id): every
    sink has handled a stream's end (called on a sink thread). finish_when(): inference may end once every
    stream has ended and been drained (a runner says: once it was asked to stop). Each build is a new run
    (`pipeline.runtime.runs`). fence: in a fleet, handed to the storage sinks (`pipeline.cluster.fencing`). Raises ConfigError, EngineError or SinkError when a part cannot be made."""
    run = new_run(config)
    detector = detector or Detector(config.detector, plan=plan.detector)
    buffer = AlignedBuffer(list(config.lanes))
    sources = Sources(buffer, decode_processes=plan.decode_processes, per_child=plan.per_child,
                      device=plan.detector.device, plugin_modules=list(plan.plugins))
    frame_sinks, event_outputs = build_outputs(list(config.sinks), OutputContext(
        detector.class_names, list(config.alerts), run, clips=sources, fence=fence))
    try:
        outbox = Outbox(Path(config.runtime.outbox_path), [output for output, _ in event_outputs]) \
            if event_outputs else None
    except BaseException:  # the outputs run already (an MQTT client's network thread): the start fails without them
        close_event_outputs(event_outputs)
        raise
    outputs = OutputSinks([*frame_sinks, *((sink, FrameSinkOptions()) for sink in sinks)], Failures())
    events = EventPublisher(outbox, entries=[(entry, output.name) for output, entry in event_outputs])
    track_ids: defaultdict[str, TrackIds] = defaultdict(TrackIds)
    stages = StageRunner(stage_factory(config, detector.class_names, track_ids), events.publish, outputs,
                         config.runtime.stage_workers, config.runtime.stage_queue_size, on_finished, run_id=run.run_id,
                         class_names=detector.class_names, instance=run.instance)
    telemetry = Telemetry()
    inference = Inference(buffer, detector, stages.submit_batch, stages.end_stream, finish_when, telemetry=telemetry)
    return Pipeline(config, plan, run, detector, buffer, sources, outputs, events, stages, inference, telemetry,
                    track_ids, fence)
