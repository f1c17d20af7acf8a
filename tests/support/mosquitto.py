"""A real Mosquitto broker for MQTT tests, and a subscriber that records what it receives.

`MosquittoBroker` runs /usr/sbin/mosquitto on a free 127.0.0.1 port with a temporary config
(anonymous, no persistence unless asked); `stop()` kills it and `start()` brings it back on the
same port. With `persistence=True` a graceful `stop(graceful=True)` saves durable sessions and
their queued messages, so a `Subscriber(clean_session=False)` misses nothing across a restart.
The `mosquitto` fixture (import it in a conftest) skips cleanly when mosquitto is not installed.
"""
from __future__ import annotations

import pytest

from samples.local_services import MOSQUITTO, MosquittoBroker, Subscriber

__all__ = ["MOSQUITTO", "MosquittoBroker", "Subscriber", "mosquitto", "mosquitto_persistent"]


@pytest.fixture
def mosquitto(tmp_path):
    """A running broker on a free port (skips when mosquitto is absent); killed at teardown."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh --test installs it)")
    broker = MosquittoBroker(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_persistent(tmp_path):
    """Like `mosquitto`, but durable sessions survive `stop(graceful=True)` and `start()`."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh --test installs it)")
    broker = MosquittoBroker(tmp_path, persistence=True).start()
    yield broker
    broker.stop()
