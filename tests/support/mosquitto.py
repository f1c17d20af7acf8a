"""A real Mosquitto broker for MQTT tests, and a subscriber that records what it receives.

`MosquittoBroker` runs /usr/sbin/mosquitto on a free 127.0.0.1 port with a temporary config
(anonymous, no persistence unless asked); `stop()` kills it and `start()` brings it back on the
same port. With `persistence=True` a graceful `stop(graceful=True)` saves durable sessions and
their queued messages, so a `Subscriber(clean_session=False)` misses nothing across a restart.
The `mosquitto` fixture (import it in a conftest) skips cleanly when mosquitto is not installed.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.http_server import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class MosquittoBroker:
    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False):
        self.port = port or free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.log_path}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 3600"]
        else:
            lines.append("persistence false")
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> "MosquittoBroker":
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {self._proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self, graceful: bool = False) -> None:
        """Kill the broker (SIGKILL), or with `graceful` let it save its state first (SIGTERM)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate() if graceful else self._proc.kill()
            self._proc.wait(5)
        self._proc = None


class Subscriber:
    """A paho client subscribed to `topic_filter` that records (topic, payload bytes) in order."""

    def __init__(self, port: int, topic_filter: str, clean_session: bool = True):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        client_id = "" if clean_session else f"test-subscriber-{port}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not subscribed.wait(5):
            raise RuntimeError(f"could not subscribe to {topic_filter} on port {port}")

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


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
