"""The console's routes over real HTTP: previews only while watched and never a backlog, the session cookie
(one per instance of a host), live events, media, today's counts over every run."""
from __future__ import annotations

import base64
import gc
import io
import json
import socket
import threading
import time

import av
import httpx
import pytest

from tests.support.service import TOKEN, config

FRAME_W, FRAME_H = 64, 48  # the fake camera's pictures


def metric(client: httpx.Client, name: str) -> float:
    (line,) = [line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # the pipeline runs on its own threads: look again
    raise AssertionError(f"not reached within {timeout} s")


def sse(client: httpx.Client, path: str, count: int) -> list[dict]:
    """The first `count` data messages of a server-sent event stream, then the stream is closed."""
    items = []
    with client.stream("GET", path) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                items.append(json.loads(line[6:]))
                if len(items) == count:
                    break
    return items


def staged(served, stream_id: str) -> int:
    return served.runner.parts.stages.frames().get(stream_id, 0)


def test_previews_are_encoded_only_while_someone_watches(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}, {"id": "b", "url": "fake://b?fps=40"}]))
    client = served.client
    wait_for(lambda: staged(served, "a") > 40 and staged(served, "b") > 40)
    assert metric(client, "streamweave_preview_frames_encoded_total") == 0  # frames went by, nobody watched

    previews = sse(client, "/api/previews?streams=a&width=32", 3)
    assert {p["stream_id"] for p in previews} == {"a"}
    seqs = [p["seq"] for p in previews]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    for preview in previews:
        assert (preview["width"], preview["height"]) == (32, 24)
        assert (preview["source_width"], preview["source_height"]) == (FRAME_W, FRAME_H)
        picture = next(av.open(io.BytesIO(base64.b64decode(preview["jpeg"]))).decode(video=0))
        assert (picture.width, picture.height) == (32, 24)
        (box,) = preview["boxes"]  # the fake engine's one square, in source pixels
        assert box["class"] == "person" and box["track_id"] >= 1 and 0 <= box["xyxy"][0] < box["xyxy"][2] <= FRAME_W

    wait_for(lambda: metric(client, "streamweave_preview_viewers") == 0)
    encoded = metric(client, "streamweave_preview_frames_encoded_total")
    assert encoded >= 3
    later = staged(served, "a") + 40
    wait_for(lambda: staged(served, "a") > later)
    assert metric(client, "streamweave_preview_frames_encoded_total") == encoded  # the viewer left: none since


def test_a_preview_is_never_wider_than_asked_for_or_than_its_source(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}]))
    (wide,) = sse(served.client, "/api/previews?streams=a&width=1920", 1)
    assert (wide["width"], wide["height"]) == (FRAME_W, FRAME_H)
    assert served.client.get("/api/previews").status_code == 422
    assert served.client.get("/api/previews?streams=").status_code == 400


@pytest.mark.slow  # 300 previews of 1280x720 pictures: until the socket's buffers are full, and beyond
def test_a_viewer_that_stops_reading_is_owed_only_the_newest_preview_of_each_camera(tmp_path):
    from pipeline.config.models import HttpConfig
    from pipeline.runtime.runner import PipelineRunner
    from pipeline.service import Control, Service
    from pipeline.service.previews import Preview

    runner = PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a?fps=60&size=1280x720"}]))
    service = Service(runner, HttpConfig(port=0, console={"preview_fps": 30}), Control(runner))
    served = threading.Thread(target=service.run)
    served.start()
    try:
        assert runner.running.wait(20)
        viewer = socket.create_connection(("127.0.0.1", service.port))
        viewer.sendall(b"GET /api/previews?streams=a&width=1280 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        previews = service.console.previews
        made = previews.encoded
        # it reads nothing (a throttled tab, a stalled link): what the socket's buffers hold, the server keeps
        wait_for(lambda: previews.encoded >= made + 300)
        held = [o for o in gc.get_objects() if isinstance(o, Preview)]
        assert len(held) <= 2, f"{len(held)} previews held for a viewer of one camera"
        viewer.close()
    finally:
        service.request_stop()
        served.join(30)


def test_the_token_buys_a_session_cookie_that_the_api_accepts_until_logout(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}]), token=TOKEN)
    base = served.client.base_url
    with httpx.Client(base_url=base, timeout=10) as browser:
        assert browser.get("/").status_code == 200  # the page itself holds nothing
        assert browser.get("/api/streams").status_code == 401
        assert browser.get("/api/previews?streams=a").status_code == 401
        assert browser.get("/api/events/live").status_code == 401
        wrong = browser.post("/login", json={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "runtime.http.token" in wrong.json()["detail"]
        assert "set-cookie" not in wrong.headers
        login = browser.post("/login", json={"token": TOKEN})
        assert login.status_code == 204
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert [s["id"] for s in browser.get("/api/streams").json()] == ["a"]
        assert browser.post("/logout").status_code == 204
        assert browser.get("/api/streams").status_code == 401
    assert served.client.get("/api/streams").status_code == 200  # the bearer token as before
    with httpx.Client(base_url=base, cookies={f"streamweave_session_{served.service.port}": "made-up"}) as forger:
        assert forger.get("/api/streams").status_code == 401


def test_a_console_served_over_https_gets_a_cookie_browsers_never_send_over_plain_http(tmp_path, serve):
    """Behind a TLS proxy on the host (its X-Forwarded-Proto is trusted from loopback) the session cookie is Secure,
    so a plain http:// request to the same host name (a link, a downgrade) never carries it in clear; over plain
    HTTP it cannot be Secure, or the browser would never send it back."""
    served = serve(config(tmp_path, []), token=TOKEN)
    with httpx.Client(base_url=served.client.base_url, timeout=10) as browser:
        proxied = browser.post("/login", json={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
        assert proxied.status_code == 204 and "; secure" in proxied.headers["set-cookie"].lower()
        logout = browser.post("/logout", headers={"X-Forwarded-Proto": "https"})
        assert "; secure" in logout.headers["set-cookie"].lower()
        plain = browser.post("/login", json={"token": TOKEN})
        assert plain.status_code == 204 and "secure" not in plain.headers["set-cookie"].lower()


def test_the_session_cookie_changes_nothing_for_a_page_of_another_origin_of_the_same_site(tmp_path, serve):
    """SameSite=Strict keeps the cookie from other sites only: a page another service of the host serves on its own
    port (or another subdomain) still sends it, and a form or a simple fetch there needs no preflight."""
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]), token=TOKEN)
    neighbour = {"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"}
    with httpx.Client(base_url=served.client.base_url, timeout=10) as browser:
        assert browser.post("/login", json={"token": TOKEN}).status_code == 204
        refused = browser.post("/api/streams/a/pause", headers=neighbour)
        assert refused.status_code == 403 and "http://127.0.0.1:3000" in refused.json()["detail"]
        assert browser.post("/api/streams/a/pause", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert browser.get("/api/streams/a").json()["state"] != "paused"
        own = {"Origin": str(served.client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
        assert browser.post("/api/streams/a/pause", headers=own).status_code in (200, 202)
        assert browser.post("/api/streams/a/resume").status_code == 200  # no Origin: not sent by a page
    assert served.client.post("/api/streams/a/pause", headers=neighbour).status_code in (200, 202)  # the token

def test_no_page_of_another_site_can_show_the_console_in_a_frame(tmp_path, serve):
    """Without a token a page of any site could frame the console on 127.0.0.1 (its requests are the console's own)
    and lure a click onto Pause or Remove laid under something else (clickjacking): browsers must refuse to frame it."""
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=10"}]))
    page = served.client.get("/")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_logging_in_to_another_instance_of_the_host_keeps_the_first_session(tmp_path, serve):
    instances = []
    for cam in ("a", "b"):  # as `run --gpus` makes them: one host, a port each
        (tmp_path / cam).mkdir()
        cameras = [{"id": cam, "url": f"fake://{cam}?fps=10"}]
        instances.append((cam, serve(config(tmp_path / cam, cameras), token=TOKEN)))
    with httpx.Client(timeout=10) as browser:  # one cookie jar for every port of the host, as a browser has
        for _, served in instances:
            assert browser.post(f"{served.client.base_url}/login", json={"token": TOKEN}).status_code == 204
        for cam, served in instances:
            listed = browser.get(f"{served.client.base_url}/api/streams")
            assert listed.status_code == 200, f"logged out of instance {cam}: {listed.text}"
            assert [s["id"] for s in listed.json()] == [cam]
        assert sorted(cookie.name for cookie in browser.cookies.jar) == sorted(
            f"streamweave_session_{served.service.port}" for _, served in instances)


def test_live_events_and_their_snapshots(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}],
                          sinks=[{"type": "media", "directory": str(tmp_path / "media")}],
                          stages=[{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 10, "clip": True}}]))
    client = served.client
    marks = sse(client, "/api/events/live", 2)
    assert [m["kind"] for m in marks] == ["mark", "mark"] and marks[0]["payload"]["seq"] < marks[1]["payload"]["seq"]
    assert marks[0]["snapshot"] == str(tmp_path / "media" / "a" / f"{marks[0]['event_id']}.jpg")
    url = f"/api/media/a/{marks[0]['event_id']}.jpg"
    reply = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(client.get(url)))
    assert reply.headers["content-type"] == "image/jpeg"
    assert next(av.open(io.BytesIO(reply.content)).decode(video=0)).width == FRAME_W
    assert client.get(f"/api/media/a/{'0' * 24}.jpg").status_code == 404
    for bad in ("../../etc/passwd", "..%2F..%2Fsite.yaml", f"{'0' * 24}.png"):
        assert client.get(f"/api/media/a/{bad}").status_code == 404
    assert client.get(f"/api/media/../{marks[0]['event_id']}.jpg").status_code == 404


def test_live_events_whose_payloads_hold_numpy_numbers_arrive_as_the_outputs_send_them(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}],
                          stages=[{"python": "tests.support.stages:NumpyScore"}]))
    scores = sse(served.client, "/api/events/live", 3)
    assert [s["payload"]["score"] for s in scores] == [0.5, 0.5, 0.5]
    assert [s["payload"]["seq"] % 5 for s in scores] == [4, 4, 4]


def test_a_console_can_be_turned_off(tmp_path):
    from pipeline.config.models import HttpConfig
    from pipeline.runtime.runner import PipelineRunner
    from pipeline.service import Control, Service

    runner = PipelineRunner(config(tmp_path, []))
    service = Service(runner, HttpConfig(port=0, console={"enabled": False}), Control(runner))
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}") as client:
        service.server.start()
        try:
            assert client.get("/").status_code == 404
            assert client.get("/api/console").status_code == 404
            assert "streamweave_preview" not in client.get("/metrics").text
        finally:
            service.server.stop()


def test_todays_counts_per_camera(tmp_path, serve):
    whole = [[0, 0], [FRAME_W, 0], [FRAME_W, FRAME_H], [0, FRAME_H]]
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}, {"id": "idle", "url": "fake://b?fps=40"}],
                          sinks=[{"type": "sqlite", "path": str(tmp_path / "site.db"), "flush_interval_s": 0.1}],
                          zones=[{"name": "all", "polygon": whole, "streams": ["a"]}],
                          lines=[{"name": "middle", "start": [32, 0], "end": [32, 48], "streams": ["a"]}]))

    def counted():
        answer = served.client.get("/api/counts").json()
        cam = answer["cameras"]["a"]
        return answer if cam["zones"] and cam["lines"] else None

    answer = wait_for(counted)
    assert answer["time_zone"] == "UTC" and answer["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert answer["cameras"]["idle"] == {"lines": [], "zones": []}
    (zone,) = answer["cameras"]["a"]["zones"]
    assert zone == {"zone": "all", "class_name": "person", "visits": 1, "inside": 1}  # the square never leaves
    (line, *_) = answer["cameras"]["a"]["lines"]
    assert line["line"] == "middle" and line["class_name"] == "person" and line["crossings"] >= 1


def test_todays_line_counts_add_up_every_run_of_the_day(tmp_path, serve):
    from zoneinfo import ZoneInfo

    from pipeline.sinks.storage.answers import Buckets, Filters, line_counts
    from pipeline.sinks.storage.query import ALL_RUNS

    db = tmp_path / "site.db"

    def site(streams):
        return config(tmp_path, streams, sinks=[{"type": "sqlite", "path": str(db), "flush_interval_s": 0.1}],
                      lines=[{"name": "middle", "start": [32, 0], "end": [32, 48]}])

    def crossings(served) -> int:
        return sum(row["crossings"] for row in served.client.get("/api/counts").json()["cameras"]["a"]["lines"])

    before = 0
    for _ in range(2):  # a restart the same day
        run = serve(site([{"id": "a", "url": "fake://a?fps=40"}]))
        wait_for(lambda: crossings(run) > before)  # this run counted crossings too
        run.stop()
        stored = line_counts(str(db), Filters(run=ALL_RUNS), Buckets(1440, ZoneInfo("UTC")))
        before = sum(row["crossings"] for row in stored)
    expected: dict[tuple, int] = {}
    for row in stored:
        key = (row["line"], row["direction"], row["class_name"])
        expected[key] = expected.get(key, 0) + row["crossings"]
    assert len({row["run_id"] for row in stored}) == 2 and len(stored) > len(expected)  # stored per run

    lines = serve(site([])).client.get("/api/counts").json()["cameras"]["a"]["lines"]  # no camera runs now
    assert len(lines) == len(expected)
    assert {(row["line"], row["direction"], row["class_name"]): row["crossings"] for row in lines} == expected
