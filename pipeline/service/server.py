"""The HTTP server on a thread of its own: uvicorn serving the service's app on a socket bound first, so
that a port in use is a config error before any stream starts, not a log line after.

A connection that sends nothing for uvicorn's `timeout_keep_alive` (5 s) is closed, before its first request
as after a response (uvicorn's own timer starts only after one), and so is one whose request has not arrived
whole (headers and body) `REQUEST_READ_S` after its first byte: connections opened and left idle, or trickling
a request a byte at a time, would otherwise hold a file descriptor each until none is left for the API, the
probes or the cameras. The service also takes the hard limit of open files as its soft limit (often 1024 where
the hard one is far higher).
"""
from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
REQUEST_READ_S = 10.0
"""The longest a request may take to arrive, from its first byte to the end of its body."""


class _IdleClosingH11(H11Protocol):
    """uvicorn's h11 protocol, with the keep-alive timer started as the connection opens too (the first byte
    received stops it, as it stops the timer after a response), and a timer running while a request is part read
    (its headers or its body; a pipelined one too) that closes the connection `REQUEST_READ_S` after it started."""

    warned_at = float("-inf")  # the last warning of a connection closed so (at most one a minute)

    def connection_made(self, transport) -> None:
        self._reading: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._time_the_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._time_the_request()  # the next, pipelined request may be part read already

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _part_read(self) -> bool:
        if self.transport.get_protocol() is not self:  # upgraded: the connection is the websocket's now
            return False
        state = self.conn.their_state
        return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def _time_the_request(self) -> None:
        if not self._part_read():
            self._stop_timer()
        elif self._reading is None:
            self._reading = self.loop.call_later(REQUEST_READ_S, self._request_too_slow)

    def _stop_timer(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None

    def _request_too_slow(self) -> None:
        self._reading = None
        if not self._part_read() or self.transport.is_closing():
            return
        if time.monotonic() - _IdleClosingH11.warned_at >= 60:
            _IdleClosingH11.warned_at = time.monotonic()
            log.warning("HTTP: closed a connection whose request had not arrived whole after %g s (further ones "
                        "within a minute are not logged)", REQUEST_READ_S)
        self.transport.close()


def raise_open_files_limit() -> None:
    """The soft limit of open files (RLIMIT_NOFILE) up to the hard one: each connection, camera and file
    takes one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class HttpServer:
    """Serves `app` on host:port from thread `http:<port>` between `start()` and `stop()`."""

    def __init__(self, app, host: str, port: int):
        raise_open_files_limit()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise _cannot_listen(host, port, exc) from None
        self.host, self.port = host, self._socket.getsockname()[1]
        # log_config=None: uvicorn leaves logging alone, so its loggers reach the root handler (`pipeline.logs`)
        # and a JSON log stays JSON; no access log: scrapes of /metrics would fill it
        config = uvicorn.Config(app, http=_IdleClosingH11, log_level="warning", access_log=False, lifespan="off",
                                log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"http:{self.port}", daemon=True)

    def start(self) -> HttpServer:
        """Listen, then serve. ConfigError when another process listens on the port since it was bound (two
        instances started at once: SO_REUSEADDR lets both bind it) or the server does not start; `stop()` then
        closes the socket."""
        try:
            self._socket.listen(self._server.config.backlog)
        except OSError as exc:
            raise _cannot_listen(self.host, self.port, exc) from None
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
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        self._socket.close()


def _cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(f"runtime.http: cannot listen on {host}:{port} ({exc.strerror}); choose a free port "
                       "(runtime.http.port) or stop what uses it")
