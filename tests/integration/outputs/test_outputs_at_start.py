"""A start that fails once the outputs are made: the error says what to do, and what was made is closed."""
from __future__ import annotations

import threading

import pytest

from pipeline.errors import SinkError
from pipeline.runtime.runner import PipelineRunner
from pipeline.sinks.outbox import Outbox
from tests.support.damaged_media import overwrite
from tests.support.outbox import RecordingOutput, make_events
from tests.support.service import config
from tests.support.waiting import wait_until


def _mqtt_clients() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")}


def test_an_outbox_damaged_inside_fails_the_start_naming_it_and_closes_the_outputs_made(tmp_path):
    """Before, SQLite's "database disk image is malformed" came out as it was, naming no file, and the MQTT
    client made before the outbox kept its network thread running."""
    path = tmp_path / "outbox.db"
    with Outbox(path, [RecordingOutput()]) as outbox:
        outbox.put(make_events(2000))
    overwrite(path, 3 * 4096, 20 * 4096)  # its events' pages; the header and schema are intact
    before = _mqtt_clients()
    mqtt = {"type": "mqtt", "host": "127.0.0.1", "port": 1}  # its client starts at once
    with pytest.raises(SinkError, match=rf"the outbox database {path} is damaged .*move it aside and start again"):
        PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a"}], sinks=[mqtt]))
    assert wait_until(lambda: _mqtt_clients() == before, timeout=10)
