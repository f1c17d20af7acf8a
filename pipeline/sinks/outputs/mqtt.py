"""MQTT output (paho-mqtt 2.x) with the topic layout Frigate users know.

Every event is published, as the same JSON, to:
- `<prefix>/events` (all events of all streams),
- `<prefix>/<stream_id>/<kind>` (e.g. `streamweave/cam-1/enter`),
- and, when the payload names a `zone` or a `line`, also `<prefix>/<stream_id>/<zone-or-line>/<kind>`.

`{instance}` in the prefix becomes the name of the instance that decided the event (`runtime.instance`), so
`streamweave/{instance}` gives every instance of a fleet a subtree of its own; the JSON names it either way.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from pipeline.config import outputs as cfg
from pipeline.errors import SinkError
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event

log = logging.getLogger(__name__)


def _level(name: object) -> str:
    """One topic level: MQTT wildcards and separators are replaced so a name cannot span levels."""
    text = str(name).strip() or "_"
    return text.replace("/", "_").replace("+", "_").replace("#", "_")


def event_topics(event: Event, prefix: str) -> list[str]:
    """The topics one event is published to, in publishing order."""
    prefix = prefix.replace("{instance}", _level(event.instance or "_"))
    stream, kind = _level(event.stream_id), _level(event.kind)
    topics = [f"{prefix}/events", f"{prefix}/{stream}/{kind}"]
    place = event.payload.get("zone") or event.payload.get("line")
    if place:
        topics.append(f"{prefix}/{stream}/{_level(place)}/{kind}")
    return topics


class MqttOutput:
    """Publishes events to an MQTT broker and returns only once the broker acknowledged them.

    With `qos` 1 or 2, `deliver` waits for the PUBACK/PUBCOMP of every topic (at most
    `publish_timeout_s`), so the outbox moves on only after the broker has the event. The client
    connects in the background and reconnects by itself (1 s doubling to `reconnect_max_s`);
    while it is disconnected `deliver` waits up to `connect_wait_s`, then raises `SinkError`, and
    the outbox retries later. QoS 0 only waits until the message was written to the socket.
    """

    max_retries = None  # retried until delivered: the outbox keeps the event

    def __init__(
        self,
        config: cfg.MqttOutput,
        name: str | None = None,
        *,
        publish_timeout_s: float = 5.0,
        connect_wait_s: float = 2.0,
        reconnect_max_s: int = 30,
        keepalive_s: int = 30,
    ):
        self.config = config
        self.name = name or f"mqtt:{config.host}:{config.port}/{config.topic_prefix}"
        self.publish_timeout_s = publish_timeout_s
        self.connect_wait_s = connect_wait_s
        self._connected = threading.Event()
        self._last_error = "not connected yet"
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamweave-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv311
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        self._client.connect_async(config.host, config.port, keepalive=keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused the connection: {reason_code}"
            log.warning("mqtt %s:%d: %s", self.config.host, self.config.port, self._last_error)
            return
        log.info("mqtt connected to %s:%d", self.config.host, self.config.port)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._last_error = f"disconnected: {reason_code}"

    def deliver(self, event: Event) -> None:
        where = f"mqtt broker {self.config.host}:{self.config.port}"
        if not self._connected.wait(self.connect_wait_s):
            raise SinkError(f"{where} is not reachable ({self._last_error}); event {event.event_id} waits in the outbox")
        body = event_to_json(event)
        infos = [self._client.publish(t, body, qos=self.config.qos) for t in event_topics(event, self.config.topic_prefix)]
        deadline = time.monotonic() + self.publish_timeout_s
        for info in infos:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                raise SinkError(f"{where} did not take event {event.event_id}: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise SinkError(
                    f"{where} did not acknowledge event {event.event_id} (qos {self.config.qos}) "
                    f"within {self.publish_timeout_s} s; retrying"
                )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
