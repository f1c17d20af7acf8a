"""GET /api/events: recent events from storage, newest first, filtered by stream, kind, class and time."""
from __future__ import annotations

import time

from tests.support.service import config


def test_recent_events_come_from_storage_filtered_and_newest_first(tmp_path, serve):
    cams = [{"id": "a", "url": "fake://a?fps=40"}, {"id": "b", "url": "fake://b?fps=40"}]
    started_ns = time.time_ns()
    served = serve(config(
        tmp_path, cams, sinks=[{"type": "sqlite", "path": str(tmp_path / "site.db"), "flush_interval_s": 0.1}],
        zones=[{"name": "left", "polygon": [[0, 0], [20, 0], [20, 48], [0, 48]]}],
        stages=[{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 5}, "streams": ["a"]}]))
    client = served.client
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(client.get("/api/events", params={"kind": "mark"}).json()) < 6:
        time.sleep(0.1)  # the storage writer commits every 0.1 s: look again
    marks = client.get("/api/events", params={"kind": "mark", "limit": 4}).json()
    assert len(marks) == 4 and {e["stream_id"] for e in marks} == {"a"}
    assert [e["wall_ns"] for e in marks] == sorted((e["wall_ns"] for e in marks), reverse=True)
    seqs = [e["payload"]["seq"] for e in marks]
    assert seqs == sorted(seqs, reverse=True) and all((seq + 1) % 5 == 0 for seq in seqs)
    zone = client.get("/api/events", params={"stream": "b", "kind": "zone_enter", "class": "person"}).json()
    assert zone and all(e["stream_id"] == "b" and e["class_id"] == 0 for e in zone)
    assert all(e["class_name"] == "person" and e["wall_time"].endswith("Z") for e in zone)  # as the webhook has it
    assert client.get("/api/events", params={"until": started_ns / 1e9}).json() == []
    since = client.get("/api/events", params={"since": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                                     time.localtime(started_ns // 10**9))}).json()
    assert len(since) >= 7
    unknown = client.get("/api/events", params={"class": "dragon"})
    assert unknown.status_code == 400 and "unknown class 'dragon'" in unknown.json()["detail"]
    assert client.get("/api/events", params={"since": "yesterday"}).status_code == 400
    for beyond in ("inf", "nan", "1e300", "99999999999999999999"):  # no time in 64 bits of nanoseconds
        reply = client.get("/api/events", params={"since": beyond})
        assert reply.status_code == 400 and "out of range" in reply.json()["detail"], (beyond, reply.text)


def test_without_storage_the_events_api_says_what_to_add(tmp_path, serve):
    reply = serve(config(tmp_path, [])).client.get("/api/events")
    assert reply.status_code == 404 and "add a sqlite or postgres sink" in reply.json()["detail"]
