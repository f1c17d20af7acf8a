"""MQTT output (paho-mqtt 2.x) with the topic layout Frigate users know.

Every event is published, as the same JSON, to:
- `<prefix>/events` (all events of all streams),
- `<prefix>/<stream_id>/<kind>` (e.g. `streamweave/cam-1/enter`),
- and, when the payload names a `zone` or a `line`, also `<prefix>/<stream_id>/<zone-or-line>/<kind>`.

`{instance}` in the prefix becomes the name of the instance that decided the event (`runtime.instance`), so
`streamweave/{instance}` gives every instance of a fleet a subtree of its own; the JSON names it either way.

The client speaks MQTT 5 (mosquitto 1.6 and later, EMQX, HiveMQ, ...): in MQTT 3.1.1 a broker has no way to
say it refused a publish, and mosquitto acknowledges one its ACL forbids and drops it, so the event would be
counted delivered and lost. MQTT 5 acknowledgements carry a reason code, and a refusal is not a delivery.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.config import outputs as cfg
from pipeline.errors import EventRefused, SinkError
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event

log = logging.getLogger(__name__)


def _level(name: object) -> str:
    """One topic level: MQTT wildcards and separators are replaced so a name cannot span levels."""
    text = str(name).strip() or "_"
    return text.replace("/", "_").replace("+", "_").replace("#", "_")


# Refusals that sending the same message again cannot change: the outbox keeps the event as a dead letter.
# "Not authorized" (0x87: the broker's ACL) is not among them: like a webhook's wrong token, it is retried until the
# ACL is fixed, and nothing is lost meanwhile.
_REFUSED_FOR_GOOD = frozenset({0x90, 0x95, 0x99})  # topic name invalid, packet too large, payload format invalid


def _parses(packet_type: int, code: int) -> bool:
    """Whether paho can read `code` in a packet of that type (it knows only the codes the spec lists there)."""
    try:
        ReasonCode(packet_type, identifier=code)
    except (ValueError, KeyError):  # a code of another packet type; one no packet type has
        return False
    return True


def _readable(packet_type: int, code: int) -> int:
    """`code`, or, where paho cannot parse it in that packet type (a PUBACK's or PUBREC's "packet too large"; a
    PUBCOMP has only "packet identifier not found"), that type's first failure code, so paho reads the packet
    rather than dropping the connection."""
    if _parses(packet_type, code):
        return code
    return next(failure for failure in range(0x80, 0x100) if _parses(packet_type, failure))


class _Client(mqtt.Client):
    """paho's client, but refusals are reported by their own reason code: paho (2.2 at least) ignores a refused
    PUBREC's (QoS 2), sends PUBREL anyway and reports the PUBCOMP's (success, or "packet identifier not found"
    from a broker that ended the exchange at the PUBREC); and it cannot parse a code the spec does not list for
    that packet type (mosquitto's "packet too large" in a PUBACK or PUBREC), and drops the connection."""

    on_refused = None  # (mid, reason code value) -> None

    def _refusal(self, packet_type: int) -> None:
        packet = self._in_packet["packet"]  # the packet id (2 bytes), then in MQTT 5 the reason code, if any
        if self._protocol == mqtt.MQTTv5 and len(packet) > 2 and packet[2] >= 0x80:
            if self.on_refused:
                self.on_refused(struct.unpack("!H", bytes(packet[:2]))[0], packet[2])
            readable = _readable(packet_type, packet[2])  # its own code is kept above
            if readable != packet[2]:
                self._in_packet["packet"] = bytes(packet[:2]) + bytes([readable]) + bytes(packet[3:])

    def _handle_pubrec(self):
        self._refusal(PacketTypes.PUBREC)
        return super()._handle_pubrec()

    def _handle_pubackcomp(self, cmd):
        self._refusal(PacketTypes.PUBACK if cmd == "PUBACK" else PacketTypes.PUBCOMP)
        return super()._handle_pubackcomp(cmd)


def _publish_size(topic: str, body: str, qos: int) -> int:
    """Bytes of an MQTT 5 PUBLISH (no properties) of `body` to `topic`; QoS 0 has no packet id."""
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + 1 + len(body.encode())
    return 1 + (1 if remaining < 2**7 else 2 if remaining < 2**14 else 3 if remaining < 2**21 else 4) + remaining


def _reason_name(code: int) -> str:
    for packet_type in (PacketTypes.PUBACK, PacketTypes.PUBCOMP, PacketTypes.DISCONNECT):  # 0x95 is named there
        if _parses(packet_type, code):
            return ReasonCode(packet_type, identifier=code).getName()
    return "refused"


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
    `publish_timeout_s`), so the outbox moves on only after the broker has the event. An acknowledgement whose
    MQTT 5 reason code is a failure is no delivery: "topic name invalid", "packet too large" and "payload format
    invalid" can never succeed and raise `EventRefused` (the outbox keeps the event as a dead letter and goes
    on); any other ("not authorized" by the broker's ACL, quota exceeded, unspecified, ...) raises `SinkError`
    and the outbox retries, the ACL's until it is fixed. QoS 0 has no acknowledgement, so a refusal there goes
    unnoticed. The client connects in the background and reconnects by itself (1 s doubling to `reconnect_max_s`);
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
        self.name = name or config.outbox_name
        self.publish_timeout_s = publish_timeout_s
        self.connect_wait_s = connect_wait_s
        self._connected = threading.Event()
        self._last_error = "not connected yet"
        self._acks_lock = threading.Lock()
        self._acks: dict[int, int] = {}  # mid -> the reason code of its PUBACK/PUBCOMP (or refused PUBREC)
        self._refused_codes: dict[int, int] = {}  # mid -> the reason code of a refusal, as the broker sent it
        self._max_packet = None  # bytes, when the broker says (CONNACK's Maximum Packet Size)
        self._abandoned: set[int] = set()  # mids an attempt gave up waiting for: their late codes are not kept
        self._client = _Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamweave-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_refused = self._on_refused
        self._client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        # A clean start on every (re)connect and no session expiry: what MQTT 3.1.1's clean session was.
        self._client.connect_async(config.host, config.port, keepalive=keepalive_s, clean_start=True)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused the connection: {reason_code}"
            log.warning("mqtt %s:%d: %s", self.config.host, self.config.port, self._last_error)
            return
        self._max_packet = getattr(properties, "MaximumPacketSize", None)
        log.info("mqtt connected to %s:%d", self.config.host, self.config.port)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._last_error = f"disconnected: {reason_code}"

    def _on_refused(self, mid: int, code: int) -> None:
        with self._acks_lock:
            if mid not in self._abandoned:  # a PUBREC's refusal is the answer, not the PUBCOMP that may follow it
                self._refused_codes.setdefault(mid, code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Called before paho marks the message published, so `deliver` finds the code once it sees that.
        with self._acks_lock:
            refused = self._refused_codes.pop(mid, None)
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            self._acks[mid] = refused if refused is not None else reason_code.value

    def _codes(self, mids: list[int]) -> dict[int, int]:
        """The reason codes of one attempt's publishes, taken out; the acknowledgements that have not come yet
        are let go of when they come (the attempt gave up: its event is published again on the next)."""
        with self._acks_lock:
            codes = {}
            for mid in mids:
                self._refused_codes.pop(mid, None)
                if mid in self._acks:
                    codes[mid] = self._acks.pop(mid)
                else:
                    self._abandoned.add(mid)
            return codes

    def deliver(self, event: Event) -> None:
        where = f"mqtt broker {self.config.host}:{self.config.port}"
        if not self._connected.wait(self.connect_wait_s):
            raise SinkError(f"{where} is not reachable ({self._last_error}); event {event.event_id} waits in the outbox")
        body = event_to_json(event)
        topics = event_topics(event, self.config.topic_prefix)
        self._check_size(where, event, body, topics)
        infos = [self._client.publish(t, body, qos=self.config.qos) for t in topics]
        deadline = time.monotonic() + self.publish_timeout_s
        try:
            for info in infos:
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                    raise SinkError(f"{where} did not take event {event.event_id}: {mqtt.error_string(info.rc)}")
                try:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                except (ValueError, RuntimeError) as exc:  # not queued, or failed (e.g. the connection went)
                    raise SinkError(f"{where} did not take event {event.event_id}: {exc}") from None
                if not info.is_published():
                    raise SinkError(
                        f"{where} did not acknowledge event {event.event_id} (qos {self.config.qos}) "
                        f"within {self.publish_timeout_s} s; retrying"
                    )
        finally:
            codes = self._codes([info.mid for info in infos])
        refused = [(topic, codes[info.mid]) for topic, info in zip(topics, infos)  # 0x80 and above: a failure
                   if self.config.qos > 0 and codes.get(info.mid, 0) >= 0x80]
        if refused:
            self._refused(where, event, body, refused, len(topics))

    def _check_size(self, where: str, event: Event, body: str, topics: list[str]) -> None:
        """EventRefused when a PUBLISH of the event is larger than the broker's Maximum Packet Size (it would
        disconnect rather than answer)."""
        limit = self._max_packet
        if limit is None:  # the broker set none: nothing to measure
            return
        size = max(_publish_size(topic, body, self.config.qos) for topic in topics)
        if size > limit:
            raise EventRefused(f"{where} takes packets of at most {limit} bytes (its max_packet_size), and event "
                               f"{event.event_id} needs {size}: raise the broker's limit or make the event smaller")

    def _refused(self, where: str, event: Event, body: str, refused: list[tuple[str, int]], n_topics: int) -> None:
        said = ", ".join(f"'{topic}': {_reason_name(code)} (0x{code:02x})" for topic, code in refused)
        message = f"{where} refused event {event.event_id} on {len(refused)} of its {n_topics} topics: {said}"
        if any(code == 0x95 for _, code in refused):
            message += (f"; it is {len(body.encode())} bytes, more than the broker's limit (its "
                        "message_size_limit): raise it or make the event smaller")
        if any(code in _REFUSED_FOR_GOOD for _, code in refused):
            raise EventRefused(message)
        hint = "; let this client publish there in the broker's ACL" if any(code == 0x87 for _, code in refused) else ""
        raise SinkError(message + hint + "; retrying")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
