"""Webhook output against a real local HTTP server, through the durable outbox."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.backoff import Backoff
from pipeline.config.outputs import WebhookOutput as WebhookConfig
from pipeline.errors import EventRefused, SinkError
from pipeline.sinks.builtin import webhook as make  # the factory `sinks:` entries go through
from pipeline.sinks.outbox import Outbox
from pipeline.sinks.outputs.webhook import WebhookOutput, redact_url
from pipeline.types import Event, Moment
from tests.support.http_server import free_port

FAST = Backoff(min_s=0.05, max_s=0.2)


WALL = 1_700_000_000 * 10**9


def make_events(n: int, start: int = 0) -> list[Event]:
    return [Moment("run-1", "cam-1", i * 10**9, WALL + i * 10**9).event("loiter", "dwell", i, 0, {"zone": "gate"})
            for i in range(start, start + n)]


def webhook(server, **kw) -> WebhookOutput:
    return WebhookOutput(WebhookConfig(type="webhook", url=server.url("/hook"), timeout_s=1.0, **kw))


def test_webhook_posts_the_event_json(http_server):
    out = webhook(http_server)
    event = replace(make_events(1)[0], class_name="person", instance="edge-1")
    out.deliver(event)
    (request,) = http_server.wait_for(1)
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == event.event_id
    assert request.json() == {
        "event_id": event.event_id, "run_id": "run-1", "instance": "edge-1", "stream_id": "cam-1", "rule": "loiter",
        "kind": "dwell", "track_id": 0, "class_id": 0, "class_name": "person", "ts_ns": 0, "wall_ns": WALL,
        "wall_time": "2023-11-14T22:13:20.000Z", "snapshot": None, "clip": None, "payload": {"zone": "gate"},
    }


def test_webhook_answering_500_raises_sink_error(http_server):
    http_server.status = 500
    with pytest.raises(SinkError, match="answered 500"):
        webhook(http_server).deliver(make_events(1)[0])


@pytest.mark.parametrize("status", [413, 422])
def test_a_webhook_refusing_the_event_itself_refuses_it_for_good(http_server, status):
    http_server.status = status
    with pytest.raises(EventRefused, match=f"answered {status}"):
        webhook(http_server).deliver(make_events(1)[0])


@pytest.mark.parametrize("status", [400, 401, 404, 429])
def test_a_webhook_refusing_for_a_reason_that_can_be_fixed_is_retried(http_server, status):
    http_server.status = status  # a wrong URL or token, a rate limit: the backlog waits for the fix
    with pytest.raises(SinkError, match=f"answered {status}") as raised:
        webhook(http_server).deliver(make_events(1)[0])
    assert not isinstance(raised.value, EventRefused)


@pytest.mark.fault
def test_webhook_that_is_down_raises_sink_error(http_server):
    http_server.stop()
    with pytest.raises(SinkError, match="unreachable"):
        webhook(http_server).deliver(make_events(1)[0])


@pytest.mark.fault
def test_down_webhook_loses_nothing_and_gets_the_backlog_in_order_when_back(http_server, tmp_path):
    events = make_events(12)
    with Outbox(tmp_path / "outbox.db", [webhook(http_server)], backoff=FAST) as outbox:
        outbox.put(events[:4])
        assert outbox.wait_delivered(5)
        http_server.stop()
        outbox.put(events[4:8])
        http_server.status = 503  # when it comes back it first fails, then recovers
        outbox.put(events[8:])
        assert not outbox.wait_delivered(0.5)
        http_server.start()
        assert http_server.wait_rejected(1, timeout=5) >= 1
        http_server.status = 200
        assert outbox.wait_delivered(10)
        stats = next(iter(outbox.stats().values()))
    received = [r.json()["event_id"] for r in http_server.wait_for(12)]
    assert received == [e.event_id for e in events]
    assert stats["failed"] >= 2 and stats["pending"] == 0


def test_a_named_webhook_whose_url_changes_sends_what_the_old_url_never_got_to_the_new_one(http_server, tmp_path):
    gone = WebhookConfig(type="webhook", url=f"http://127.0.0.1:{free_port()}/hook", name="alarms", timeout_s=1.0)
    with Outbox(tmp_path / "outbox.db", [make(gone, None)], backoff=FAST) as outbox:
        outbox.put(make_events(5))
        assert not outbox.wait_delivered(0.3)  # the old endpoint is gone
        outbox.remove_output("alarms")  # what a reload with the new URL does: the old one out, the new one in
        outbox.add_output(make(gone.model_copy(update={"url": http_server.url("/hook")}), None))
        assert outbox.wait_delivered(10)
    assert [r.json()["track_id"] for r in http_server.wait_for(5)] == [0, 1, 2, 3, 4]


@pytest.mark.fault
def test_webhook_backlog_survives_a_process_restart(http_server, tmp_path):
    http_server.stop()
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, [webhook(http_server)], backoff=FAST)
    outbox.open()
    outbox.put(make_events(5))
    assert outbox.close(timeout=3)
    http_server.start()
    with Outbox(path, [webhook(http_server)], backoff=FAST) as restarted:
        assert restarted.wait_delivered(10)
    assert [r.json()["track_id"] for r in http_server.wait_for(5)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("path, sent", [
    ("/événements", "/%C3%A9v%C3%A9nements"),
    ("/hook?site=Zürich&x=a b", "/hook?site=Z%C3%BCrich&x=a%20b"),
    ("/already%20quoted?q=%C3%A9", "/already%20quoted?q=%C3%A9"),
])
def test_a_webhook_url_with_characters_http_cannot_carry_is_sent_percent_encoded(http_server, path, sent):
    webhook_output = WebhookOutput(WebhookConfig(type="webhook", url=http_server.url(path), timeout_s=1.0))
    webhook_output.deliver(make_events(1)[0])
    (request,) = http_server.wait_for(1)
    assert request.path == sent


def test_credentials_in_the_webhook_url_never_reach_messages(http_server):
    url = http_server.url("/hook").replace("http://", "http://alice:s3cret@") + "?token=abc123"
    http_server.stop()
    out = WebhookOutput(WebhookConfig(type="webhook", url=url, timeout_s=0.5))
    with pytest.raises(SinkError) as err:
        out.deliver(make_events(1)[0])
    for secret in ("s3cret", "alice", "abc123"):
        assert secret not in str(err.value) and secret not in out.name
    assert redact_url(url).endswith("/***?token=***")  # the path may hold a secret too (Slack, Discord)


def test_basic_auth_from_the_url_is_sent_as_a_header(http_server):
    url = http_server.url("/hook").replace("http://", "http://alice:s3cret@")
    WebhookOutput(WebhookConfig(type="webhook", url=url)).deliver(make_events(1)[0])
    (request,) = http_server.wait_for(1)
    assert request.headers["Authorization"] == "Basic YWxpY2U6czNjcmV0"


def test_a_redirecting_webhook_is_a_failed_delivery_not_a_silent_get(tmp_path):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:pw@127.0.0.1:{server.server_address[1]}/hook"
        output = WebhookOutput(WebhookConfig(type="webhook", url=url, timeout_s=2))
        with pytest.raises(SinkError, match="302"):
            output.deliver(make_events(1)[0])
    finally:
        server.shutdown()


class TricklingReceiver:
    """A real HTTP receiver that, while `trickle` is set, answers 200 one byte at a time (every `gap_s`):
    in its headers, in a body with a Content-Length, or in a body that ends only when the connection does."""

    def __init__(self, part: str, gap_s: float = 0.1, size: int = 60):
        self.part, self.gap_s, self.size = part, gap_s, size  # 60 bytes at 0.1 s: 6 s for the whole answer
        self.trickle = True
        self.attempts = 0
        self.received: list[str] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner._cond:
                    owner.attempts += 1
                    owner._cond.notify_all()
                    trickle = owner.trickle
                    if not trickle:
                        owner.received.append(self.headers["Idempotency-Key"])
                if not trickle:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.close_connection = True
                if owner.part == "headers":
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Slow: " + b"x" * owner.size + b"\r\n\r\n"
                else:
                    self.send_response(200)
                    if owner.part == "body":
                        self.send_header("Content-Length", str(owner.size))
                    self.end_headers()
                    self.wfile.flush()
                    answer = b"x" * owner.size
                try:
                    for i in range(len(answer)):  # the behaviour under test: each byte well inside timeout_s
                        if owner._stopping.wait(owner.gap_s):
                            return
                        self.wfile.write(answer[i:i + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the webhook gave up and closed the connection

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_attempts(self, count: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.attempts >= count, timeout)
            return self.attempts

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(params=["headers", "body", "body-until-close"])
def trickling_receiver(request):
    receiver = TricklingReceiver(request.param)
    yield receiver
    receiver.stop()


@pytest.mark.fault
def test_a_receiver_trickling_its_answer_is_cut_off_at_timeout_s(trickling_receiver):
    """timeout_s bounds the whole attempt, not each read: the answer takes 6 s, a byte every 0.1 s."""
    output = WebhookOutput(WebhookConfig(type="webhook", url=trickling_receiver.url, timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(SinkError, match=r"did not answer event .* within timeout_s 0.5 s") as raised:
        output.deliver(make_events(1)[0])
    assert time.monotonic() - started < 2.5  # the trickle alone would take 6 s
    assert not isinstance(raised.value, EventRefused)  # retried: a slow receiver may recover
    assert "/hook" not in str(raised.value)  # the URL is masked


@pytest.mark.fault
def test_a_trickling_receiver_does_not_hold_the_backlog_and_loses_nothing(tmp_path):
    receiver = TricklingReceiver("body")
    events = make_events(3)
    output = WebhookOutput(WebhookConfig(type="webhook", url=receiver.url, timeout_s=0.5))
    try:
        with Outbox(tmp_path / "outbox.db", [output], backoff=FAST) as outbox:
            outbox.put(events)
            started = time.monotonic()
            assert receiver.wait_attempts(3, timeout=5) >= 3  # given up and retried, again and again
            assert time.monotonic() - started < 4  # three attempts in less than one trickle's 6 s
            stats = outbox.stats()[output.name]
            assert stats["delivered"] == 0 and stats["pending"] == 3 and stats["dead"] == 0
            receiver.trickle = False  # the receiver recovers: the kept events go through, in order
            assert outbox.wait_delivered(10)
    finally:
        receiver.stop()
    assert receiver.received == [e.event_id for e in events]
