"""MQTT output against a real Mosquitto broker, observed by a real subscriber."""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import replace

import pytest
from pydantic import ValidationError

from pipeline.backoff import Backoff
from pipeline.config.outputs import MqttOutput as MqttConfig
from pipeline.errors import SinkError
from pipeline.sinks.outbox import Outbox
from pipeline.sinks.outputs.mqtt import MqttOutput, event_topics
from pipeline.types import Event, Moment
from tests.support.mosquitto import MOSQUITTO, MosquittoBroker, Subscriber
from tests.support.waiting import wait_until

FAST = Backoff(min_s=0.05, max_s=0.5)


def make_event(i: int, kind: str = "enter", payload=None, stream: str = "cam-1") -> Event:
    return Moment("run-1", stream, i * 10**8, 1_700_000_000 * 10**9 + i * 10**8).event(
        "door", kind, i, 0, {"zone": "front door"} if payload is None else payload)


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port, "sw/#")
    yield sub
    sub.close()


def output(broker, qos=1, **kw) -> MqttOutput:
    return MqttOutput(MqttConfig(type="mqtt", port=broker.port, topic_prefix="sw", qos=qos), **kw)


def unique_ids(messages, topic: str) -> list[str]:
    """Event ids seen on one topic, first occurrence only (delivery is at least once)."""
    seen: list[str] = []
    for t, payload in messages:
        event_id = json.loads(payload)["event_id"]
        if t == topic and event_id not in seen:
            seen.append(event_id)
    return seen


def test_zone_event_is_published_on_the_frigate_style_topics(mosquitto, subscriber):
    out = output(mosquitto)
    try:
        event = make_event(1)
        out.deliver(event)
        messages = subscriber.wait_for(3)
    finally:
        out.close()
    assert sorted(t for t, _ in messages) == ["sw/cam-1/enter", "sw/cam-1/front door/enter", "sw/events"]
    assert all(json.loads(p)["event_id"] == event.event_id for _, p in messages)


def test_event_without_zone_or_line_goes_to_events_and_stream_kind_topics():
    event = make_event(2, kind="cross", payload={"line": "gate/1"})
    assert event_topics(event, "sw") == ["sw/events", "sw/cam-1/cross", "sw/cam-1/gate_1/cross"]
    assert event_topics(make_event(3, payload={}), "sw") == ["sw/events", "sw/cam-1/enter"]


def test_the_instance_is_in_the_message_and_fills_its_placeholder_in_the_topics(mosquitto, subscriber):
    out = MqttOutput(MqttConfig(type="mqtt", port=mosquitto.port, topic_prefix="sw/{instance}"))
    try:
        event = replace(make_event(4), instance="edge/2")
        out.deliver(event)
        messages = subscriber.wait_for(3)
    finally:
        out.close()
    assert sorted(t for t, _ in messages) == ["sw/edge_2/cam-1/enter", "sw/edge_2/cam-1/front door/enter",
                                              "sw/edge_2/events"]  # a name cannot span topic levels
    assert {json.loads(p)["instance"] for _, p in messages} == {"edge/2"}


def test_a_topic_placeholder_other_than_instance_is_refused_naming_it():
    with pytest.raises(ValidationError, match=r"unknown placeholder \{host\}; only \{instance\} is filled in"):
        MqttConfig(type="mqtt", topic_prefix="sw/{host}/{instance}")


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_deliver_returns_after_the_broker_has_the_event(mosquitto, subscriber, qos):
    out = output(mosquitto, qos=qos)
    try:
        for i in range(5):
            out.deliver(make_event(i, payload={}))
    finally:
        out.close()
    assert unique_ids(subscriber.wait_for(10), "sw/events") == [make_event(i).event_id for i in range(5)]


@pytest.mark.fault
def test_deliver_raises_sink_error_while_the_broker_is_down(mosquitto):
    mosquitto.stop()
    out = output(mosquitto, connect_wait_s=0.3)
    try:
        with pytest.raises(SinkError, match="not reachable"):
            out.deliver(make_event(1))
    finally:
        out.close()


@pytest.mark.fault
def test_broker_restart_delivers_the_backlog_in_order(mosquitto_persistent, tmp_path):
    broker = mosquitto_persistent
    sub = Subscriber(broker.port, "sw/events", clean_session=False)
    events = [make_event(i, payload={}) for i in range(12)]
    mqtt_out = output(broker, connect_wait_s=0.3, publish_timeout_s=1.0)
    try:
        with Outbox(tmp_path / "outbox.db", [mqtt_out], backoff=FAST) as outbox:
            outbox.put(events[:4])
            assert outbox.wait_delivered(5)
            broker.stop(graceful=True)
            outbox.put(events[4:])
            assert not outbox.wait_delivered(1.0)
            assert outbox.stats()[mqtt_out.name]["pending"] == 8
            broker.start()
            assert outbox.wait_delivered(15)
        messages = sub.wait_for(12, timeout=10)
    finally:
        sub.close()
    assert unique_ids(messages, "sw/events") == [e.event_id for e in events]


@pytest.fixture
def mosquitto_acl(tmp_path):
    """A broker whose ACL lets anonymous clients read everything but write only `allowed/#`."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh --test installs it)")
    broker = MosquittoBroker(tmp_path)
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic readwrite allowed/#\n")
    # As root mosquitto drops to its own user, which cannot read pytest's private tmp_path: stay root.
    user = "user root\n" if os.geteuid() == 0 else ""
    broker.config_path.write_text(broker.config_path.read_text() + f"acl_file {acl}\n{user}")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.fault
@pytest.mark.parametrize("qos", [1, 2])
def test_a_publish_the_broker_acl_denies_is_not_a_delivery_and_goes_through_once_the_acl_allows_it(
        mosquitto_acl, tmp_path, qos):
    sub = Subscriber(mosquitto_acl.port, "#")
    events = [make_event(i, payload={}) for i in range(3)]
    allowed, denied = (MqttOutput(MqttConfig(type="mqtt", port=mosquitto_acl.port, topic_prefix=prefix, qos=qos))
                       for prefix in ("allowed", "denied"))
    try:
        with Outbox(tmp_path / "outbox.db", [allowed, denied], backoff=FAST) as outbox:
            outbox.put(events)
            assert wait_until(lambda: outbox.stats()[allowed.name]["delivered"] == 3
                              and outbox.stats()[denied.name]["failed"] >= 2, timeout=10)
            held = outbox.stats()[denied.name]
            messages = sub.wait_for(6)  # 2 topics per event on the allowed prefix
            (tmp_path / "acl").write_text("topic read #\ntopic readwrite allowed/#\ntopic readwrite denied/#\n")
            mosquitto_acl.stop(graceful=True)  # the operator fixes the ACL
            mosquitto_acl.start()
            assert outbox.wait_delivered(20)
            after = outbox.stats()[denied.name]
    finally:
        sub.close()
        allowed.close()
        denied.close()
    assert held["delivered"] == 0 and held["dead"] == 0 and held["pending"] == 3  # refused: kept, not delivered
    assert after["delivered"] == 3 and after["dead"] == 0
    assert unique_ids(messages, "allowed/events") == [e.event_id for e in events]
    assert not [t for t, _ in messages if not t.startswith("allowed/")]  # the broker dropped what it refused


@pytest.mark.fault
@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("limit", ["message_size_limit", "max_packet_size"])
def test_an_event_too_large_for_the_broker_becomes_a_dead_letter_and_the_next_goes_on(tmp_path, limit, qos):
    """Like a webhook's 413: sending it again cannot help, so it is kept as a dead letter naming its size and the
    limit, rather than holding back every later event (the broker's answer was unreadable, or it disconnected)."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh --test installs it)")
    broker = MosquittoBroker(tmp_path)
    broker.config_path.write_text(broker.config_path.read_text() + f"{limit} 2000\n")
    broker.start()
    sub = Subscriber(broker.port, "sw/events")
    events = [make_event(i, payload={}) for i in range(3)]
    events[1] = replace(events[1], payload={"polygon": [[i, i] for i in range(300)]})  # about 3 KB of JSON
    out = output(broker, qos=qos)
    try:
        with Outbox(tmp_path / "outbox.db", [out], backoff=FAST) as outbox:
            outbox.put(events)
            assert outbox.wait_delivered(20)
            stats = outbox.stats()[out.name]
        messages = sub.wait_for(2)
    finally:
        sub.close()
        broker.stop()
    assert stats["delivered"] == 2 and stats["dead"] == 1
    assert unique_ids(messages, "sw/events") == [events[0].event_id, events[2].event_id]
    [(error,)] = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT error FROM dead_letters").fetchall()
    assert events[1].event_id in error and "bytes" in error and ("2000" in error or limit in error)
