"""A real local HTTP server for webhook tests: records POSTs, can fail on demand, stop and restart.

    server = RecordingHttpServer().start()
    server.url("/hook")          # http://127.0.0.1:PORT/hook
    server.status = 500          # answer every POST with 500 (nothing is recorded)
    server.stop(); server.start()  # same port again
    server.wait_for(3, timeout=5)  # -> list of Received
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
                                        name=f"http-test:{self.port}", daemon=True)
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
