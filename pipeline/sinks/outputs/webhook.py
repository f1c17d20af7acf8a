"""Webhook output: one HTTP POST of the event's JSON per event."""
from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from pipeline.config import outputs as cfg
from pipeline.errors import EventRefused, SinkError
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event


def redact_url(url: str) -> str:
    """The URL without its password, path secrets and query values, fit for logs:
    `https://***@host/***?token=***` (Slack/Discord/Teams hooks carry their secret in the path)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    path = "/***" if parts.path.strip("/") else parts.path
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a bodiless GET (counted as delivered) and forward the
    Authorization header to wherever it points: treat it as a failed delivery instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Deadline:
    """One delivery attempt's overall deadline. A socket timeout only bounds each read, so a receiver that
    trickles its answer a byte at a time would hold the delivery for ever: at the deadline a timer shuts the
    connection's socket down, which ends whatever read or write is blocked on it (headers, body, TLS)."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._done = False
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Called once the connection is open: from now on the deadline closes this socket."""
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            raise TimeoutError("the delivery's deadline passed while connecting")

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sock = self._sock
        if sock is not None:
            try:  # the base method: on an SSL socket it leaves the TLS state alone for the blocked reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def finish(self) -> bool:
        """Stop the timer; True when the deadline had passed (what was read may then be cut short)."""
        self._timer.cancel()
        with self._lock:
            self._done = True
            return self.expired


def _watched(http_class: type, req: urllib.request.Request):
    """`http_class`'s connections, each connecting within what is left of the request's `_Deadline` and handing
    its socket to it once open."""
    deadline: _Deadline | None = getattr(req, "deadline", None)
    if deadline is None:
        return http_class

    def connection(*args, **kwargs):
        conn = http_class(*args, **kwargs)
        connect = conn.connect

        def connect_watched():
            conn.timeout = max(deadline.remaining(), 0.001)  # connecting (and TLS) within what is left
            connect()
            deadline.watch(conn.sock)

        conn.connect = connect_watched
        return conn

    return connection


class _DeadlineMixin:
    def do_open(self, http_class, req, **http_conn_args):
        return super().do_open(_watched(http_class, req), req, **http_conn_args)


class _HTTPHandler(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects, _HTTPHandler, _HTTPSHandler)
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what a URL's path and query keep as written (`%` too: quoted already)
_REFUSES_THE_EVENT = (413, 422)  # the event's content is refused: sending it again cannot help


class WebhookOutput:
    """POSTs each event as `application/json` to `config.url` and waits at most `config.timeout_s` in all
    (connecting, sending and the whole answer: a receiver that trickles its answer is cut off at the deadline).

    A 2xx answer counts as delivered. 413 (too large) and 422 (unprocessable) say the receiver will never take
    this event: `EventRefused`, and the outbox keeps it as a dead letter and goes on. Any other status (a wrong
    URL or credentials included, which the operator can fix), a refused connection or a timeout raises
    `SinkError` and the outbox retries. The `Idempotency-Key` header carries the event id so that a
    receiver can drop the repeats at-least-once delivery may cause. Basic-auth credentials in the
    URL are sent as an Authorization header and never appear in names or messages.
    """

    def __init__(self, config: cfg.WebhookOutput, name: str | None = None):
        parts = urllib.parse.urlsplit(config.url)  # http(s) with a host: checked by the config model
        self.config = config
        self.max_retries = config.max_retries
        self.name = name or config.outbox_name
        self._safe_url = redact_url(config.url)
        self._url, self._auth = self._split_credentials(parts)

    @staticmethod
    def _split_credentials(parts: urllib.parse.SplitResult) -> tuple[str, str | None]:
        # http.client sends the request line as ASCII and refuses spaces: percent-encode the rest, as browsers and
        # requests do, rather than fail every delivery
        parts = parts._replace(path=urllib.parse.quote(parts.path, safe=_URL_SAFE),
                               query=urllib.parse.quote(parts.query, safe=_URL_SAFE))
        if parts.username is None:
            return urllib.parse.urlunsplit(parts), None
        import base64  # noqa: PLC0415 - only for URLs with credentials

        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"

    def deliver(self, event: Event) -> None:
        body = event_to_json(event).encode()
        request = urllib.request.Request(self._url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("Idempotency-Key", event.event_id)
        if self._auth:
            request.add_header("Authorization", self._auth)
        # One deadline for the whole attempt: connecting, sending and the whole answer (the socket's own
        # timeout bounds only each read; a receiver trickling its answer never trips it).
        request.deadline = deadline = _Deadline(self.config.timeout_s)
        try:
            with _NO_REDIRECTS.open(request, timeout=self.config.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            deadline.finish()  # the status came in time: it is the answer, even if its body would not have
            exc.close()
            refused = EventRefused if exc.code in _REFUSES_THE_EVENT else SinkError
            raise refused(f"webhook {self._safe_url} answered {exc.code} {exc.reason} to event {event.event_id}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if deadline.finish():
                raise self._too_slow(event) from None
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise SinkError(
                f"webhook {self._safe_url} unreachable for event {event.event_id}: {reason}; "
                f"is the receiver up? (timeout {self.config.timeout_s} s)"
            ) from None
        finally:
            deadline.finish()  # whatever else is raised: the timer must not outlive the attempt
        if deadline.expired:  # the answer was cut short at the deadline (e.g. a body without a length)
            raise self._too_slow(event)

    def _too_slow(self, event: Event) -> SinkError:
        return SinkError(
            f"webhook {self._safe_url} did not answer event {event.event_id} within timeout_s "
            f"{self.config.timeout_s} s (connecting, sending and the whole answer); retrying"
        )

    def close(self) -> None:
        """Nothing is held open between requests."""
