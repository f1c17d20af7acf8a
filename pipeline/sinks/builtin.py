"""Factories of the built-in `sinks:` types, as `pipeline.config.outputs` registers them: `(entry, context)`
to a frame `Sink` or an `EventOutput`. Each imports its module when first used."""
from __future__ import annotations

from pipeline.sinks.base import OutputContext


def sqlite(entry, context: OutputContext):
    from pipeline.sinks.storage.sqlite import SqliteSink  # noqa: PLC0415

    return SqliteSink(entry, context.class_names, context.run)


def postgres(entry, context: OutputContext):
    from pipeline.sinks.storage.postgres import PostgresSink  # noqa: PLC0415 - psycopg is optional

    return PostgresSink(entry, context.class_names, context.run, fence=context.fence)


def jsonl(entry, context: OutputContext):
    if entry.what == "events":
        from pipeline.sinks.outputs.event_log import EventLogOutput  # noqa: PLC0415

        return EventLogOutput(entry)
    from pipeline.sinks.jsonl import JsonlSink  # noqa: PLC0415

    return JsonlSink(entry, context.class_names)


def webhook(entry, context: OutputContext):
    from pipeline.sinks.outputs.webhook import WebhookOutput  # noqa: PLC0415

    return WebhookOutput(entry, entry.name)


def mqtt(entry, context: OutputContext):
    from pipeline.sinks.outputs.mqtt import MqttOutput  # noqa: PLC0415 - paho is loaded only when used

    return MqttOutput(entry, entry.name)


def media(entry, context: OutputContext):
    from pipeline.sinks.media import MediaSink  # noqa: PLC0415

    return MediaSink(entry, context.alerts, clips=context.clips)


def mot(entry, context: OutputContext):
    from pipeline.sinks.mot_export import MotExportSink  # noqa: PLC0415

    return MotExportSink(entry)
