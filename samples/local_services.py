"""Local services a pipeline talks to, for the demo and the tests: a webhook receiver and a Mosquitto broker.

    server = RecordingHttpServer(port).start()   # records every POST; `status` 500 makes it refuse
    broker = MosquittoBroker(workdir, port).start()   # Debian's /usr/sbin/mosquitto on 127.0.0.1
    listener = Subscriber(port, "demo/#")        # records (topic, payload) in order
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingHttpServer:
    """Accepts POSTs on 127.0.0.1:port; `status` 2xx records the request, anything else rejects it."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.status = 200
        self.received: list[Received] = []
        self.rejected = 0
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = owner.status
                with owner._cond:
                    if 200 <= status < 300:
                        owner.received.append(Received(self.path, dict(self.headers), body))
                    else:
                        owner.rejected += 1
                    owner._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler

    def start(self) -> "RecordingHttpServer":
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"http:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; connections are then refused until `start()` again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The recorded requests once there are at least `count` (fewer if `timeout` passed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.received)

    def wait_rejected(self, count: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.rejected < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self.rejected


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
