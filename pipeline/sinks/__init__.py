"""Outputs: frame sinks (storage, JSONL, media, MOT export) and event outputs (webhook, MQTT, event log)."""
from __future__ import annotations

import logging
from typing import Any

from pipeline import plugins
from pipeline.config.outputs import FrameSinkOptions, is_event_output
from pipeline.errors import ConfigError
from pipeline.sinks.base import EventOutput, OutputContext, Sink

__all__ = ["build_outputs", "close_event_outputs"]

log = logging.getLogger(__name__)


def build_outputs(entries: list[Any], context: OutputContext) -> tuple[list[tuple[Sink, FrameSinkOptions]],
                                                                      list[tuple[EventOutput, Any]]]:
    """The `sinks:` entries made by their registered factories: (frame sinks, event outputs), each with its
    entry (a frame sink's entry holds its queue options), in config order. A frame sink with an `event_output`
    (storage: its events table) is fed events by the outbox too, listed among the event outputs with its entry.
    ConfigError when a plugin's frame sink has no queue options."""
    frame_sinks: list[tuple[Sink, FrameSinkOptions]] = []
    event_outputs: list[tuple[EventOutput, Any]] = []
    try:
        for entry in entries:
            _build(entry, context, frame_sinks, event_outputs)
    except BaseException:  # what was made may run already (an MQTT client's network thread, an open file)
        close_event_outputs(event_outputs)
        raise
    return frame_sinks, event_outputs


def close_event_outputs(event_outputs: list[tuple[EventOutput, Any]]) -> None:
    """Close the event outputs `build_outputs` made, after a start that failed before the outbox took them (a frame
    sink's own, storage's events table, connects only once the outbox delivers to it); what fails is logged."""
    for output, entry in event_outputs:
        if is_event_output(entry):
            _close_quietly(output)


def _build(entry: Any, context: OutputContext, frame_sinks: list, event_outputs: list) -> None:
    made = plugins.resolve(plugins.output(entry.type).factory)(entry, context)
    if is_event_output(entry):
        event_outputs.append((made, entry))
        _check_contract(entry.type, made, ("name", "max_retries", "deliver", "close"), "EventOutput")
    elif isinstance(entry, FrameSinkOptions):
        _check_contract(entry.type, made, ("name", "open", "on_stream_start", "on_frame", "on_events",
                                           "on_stream_end", "close", "stats"), "Sink (derive from BaseSink)")
        frame_sinks.append((made, entry))
        if getattr(made, "event_output", None) is not None:
            event_outputs.append((made.event_output, entry))
    else:
        raise ConfigError(f"sink type '{entry.type}': a frame sink's config model must derive from "
                          "pipeline.config.outputs.FrameSinkOptions (its queue_size and overflow)")


def _close_quietly(output: Any) -> None:
    if not hasattr(output, "close"):  # a plugin's output refused for lacking it
        return
    try:
        output.close()
    except Exception:  # noqa: BLE001 - the error that stopped the build is the one to raise
        log.exception("closing output '%s' after a failed build", getattr(output, "name", output))


def _check_contract(type_: str, made: Any, names: tuple[str, ...], protocol: str) -> None:
    """A plugin's output that lacks part of its protocol is refused at start, naming what is missing."""
    missing = [name for name in names if not hasattr(made, name)]
    if missing:
        raise ConfigError(f"sink type '{type_}': {type(made).__name__} lacks {missing} of the {protocol} "
                          "protocol (pipeline.sinks.base)")
