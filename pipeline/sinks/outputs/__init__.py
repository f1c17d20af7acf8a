"""Event outputs the outbox delivers to: webhook, MQTT and the JSONL event log.

`build_event_outputs(sinks)` turns the `sinks:` entries of the config that are event outputs into
`EventOutput` objects; other sink types (storage, media, detections JSONL, MOT) are skipped.
"""
from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import models as cfg
from pipeline.sinks.base import EventOutput


def build_event_outputs(sinks: Sequence[object]) -> list[EventOutput]:
    """EventOutput objects for the webhook, mqtt and `jsonl` with `what: events` entries, in order."""
    from pipeline.sinks.outputs.event_log import EventLogOutput  # noqa: PLC0415 - keep paho import lazy
    from pipeline.sinks.outputs.mqtt import MqttOutput  # noqa: PLC0415
    from pipeline.sinks.outputs.webhook import WebhookOutput  # noqa: PLC0415

    outputs: list[EventOutput] = []
    for sink in sinks:
        if isinstance(sink, cfg.WebhookOutput):
            outputs.append(WebhookOutput(sink))
        elif isinstance(sink, cfg.MqttOutput):
            outputs.append(MqttOutput(sink))
        elif isinstance(sink, cfg.JsonlOutput) and sink.what == "events":
            outputs.append(EventLogOutput(sink))
    return outputs
