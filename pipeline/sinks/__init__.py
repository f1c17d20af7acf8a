"""Outputs: frame sinks (storage, JSONL, media, MOT export) and event outputs (webhook, MQTT, event log)."""
from __future__ import annotations

from typing import Any

from pipeline import plugins
from pipeline.config.outputs import FrameSinkOptions, is_event_output
from pipeline.errors import ConfigError
from pipeline.sinks.base import EventOutput, OutputContext, Sink

__all__ = ["build_outputs"]


def build_outputs(entries: list[Any], context: OutputContext) -> tuple[list[tuple[Sink, FrameSinkOptions]], list[EventOutput]]:
    """The `sinks:` entries made by their registered factories: (frame sinks with their queue options,
    event outputs), each in config order. ConfigError when a plugin's frame sink has no queue options."""
    frame_sinks: list[tuple[Sink, FrameSinkOptions]] = []
    event_outputs: list[EventOutput] = []
    for entry in entries:
        made = plugins.resolve(plugins.output(entry.type).factory)(entry, context)
        if is_event_output(entry):
            event_outputs.append(made)
        elif isinstance(entry, FrameSinkOptions):
            frame_sinks.append((made, entry))
        else:
            raise ConfigError(f"sink type '{entry.type}': a frame sink's config model must derive from "
                              "pipeline.config.outputs.FrameSinkOptions (its queue_size and overflow)")
    return frame_sinks, event_outputs
