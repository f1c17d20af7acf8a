"""The HTTP server on a thread of its own: uvicorn serving the service's app on a socket bound first, so
that a port in use is a config error before any stream starts, not a log line after."""
from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


class HttpServer:
    """Serves `app` on host:port from thread `http:<port>` between `start()` and `stop()`."""

    def __init__(self, app, host: str, port: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"runtime.http: cannot listen on {host}:{port} ({exc.strerror}); choose a free port "
                              "(runtime.http.port) or stop what uses it") from None
        self.host, self.port = host, self._socket.getsockname()[1]
        # log_config=None: uvicorn leaves logging alone, so its loggers reach the root handler (`pipeline.logs`)
        # and a JSON log stays JSON; no access log: scrapes of /metrics would fill it
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"http:{self.port}", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # uvicorn sets `started` from its own thread and offers no event to wait on
        if not self._server.started:
            raise ConfigError(f"runtime.http: the server on {self.host}:{self.port} did not start; see the log")
        log.info("HTTP on http://%s:%d (API /api, /metrics, /status, /docs)", self.host, self.port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
