"""Webhook output: one HTTP POST of the event's JSON per event."""
from __future__ import annotations

import hashlib
import socket
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


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)
_REFUSES_THE_EVENT = (413, 422)  # the event's content is refused: sending it again cannot help


class WebhookOutput:
    """POSTs each event as `application/json` to `config.url` and waits at most `config.timeout_s`.

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
        # The name keys the outbox cursor: stable per URL, but without any secret the URL carries.
        digest = hashlib.sha1(config.url.encode()).hexdigest()[:8]
        self.name = name or f"webhook:{parts.hostname}{':' + str(parts.port) if parts.port else ''}#{digest}"
        self._safe_url = redact_url(config.url)
        self._url, self._auth = self._split_credentials(parts)

    @staticmethod
    def _split_credentials(parts: urllib.parse.SplitResult) -> tuple[str, str | None]:
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
        try:
            with _NO_REDIRECTS.open(request, timeout=self.config.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            refused = EventRefused if exc.code in _REFUSES_THE_EVENT else SinkError
            raise refused(f"webhook {self._safe_url} answered {exc.code} {exc.reason} to event {event.event_id}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(
                f"webhook {self._safe_url} unreachable for event {event.event_id}: {reason}; "
                f"is the receiver up? (timeout {self.config.timeout_s} s)"
            ) from None

    def close(self) -> None:
        """Nothing is held open between requests."""
