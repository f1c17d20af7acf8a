"""Reload and live changes of zones, lines and alert rules against a running pipeline, over HTTP and
SIGHUP; every change written back to the config file with its comments kept."""
from __future__ import annotations

import json
import re
import signal
import sqlite3
import sys

import pytest
import yaml

from pipeline.config import load_config
from pipeline.config.outputs import WebhookOutput as WebhookConfig
from pipeline.errors import PipelineError
from pipeline.testing import RecordingSink
from tests.conftest import REPO
from tests.support.damaged_media import write_clip
from tests.support.http_server import RecordingHttpServer, free_port
from tests.support.service import DROPS, ServiceProcess, config_data
from tests.support.waiting import wait_until

# The fake camera's square (8 px) moves one pixel per frame to the right across 64 px, then starts again:
# one track per pass of 56 frames (7 s at 8 fps).
SITE = """\
# loading dock, north side
plugins: [pipeline.testing]
streams:  # the cameras
  - id: a   # over the gate
    url: fake://a?fps=8
    ring_size: 16
  - id: b
    url: fake://b?fps=8
    ring_size: 16
detector: {{model: fake, engine: fake}}
zones:
  - name: dock  # where trucks wait
    streams: [a]
    polygon: [[4, 0], [60, 0], [60, 48], [4, 48]]
runtime:
  outbox_path: {outbox}
"""


def site(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(outbox=tmp_path / "outbox.db"))
    return path


def events(sink: RecordingSink, stream: str, kind: str) -> list:
    return [e for e in list(sink.events[stream]) if e.kind == kind]


def test_a_moved_zone_applies_on_reload_without_resetting_tracks(tmp_path, serve):
    path = site(tmp_path)
    sink = RecordingSink()
    served = serve(load_config(path), sinks=[sink], path=path)
    assert sink.wait_for(lambda s: events(s, "a", "zone_enter"), timeout=20)
    (entered,) = events(sink, "a", "zone_enter")
    path.write_text(path.read_text().replace("[[4, 0], [60, 0], [60, 48], [4, 48]]",
                                             "[[40, 0], [60, 0], [60, 48], [40, 48]]"))
    reply = served.client.post("/api/reload")
    assert reply.status_code == 200, reply.text
    assert reply.json()["applied"] == {"streams_added": [], "streams_removed": [], "streams_restarted": [],
                                       "analytics_changed": True, "lanes_changed": False, "sinks_added": [],
                                       "sinks_removed": []}
    assert sink.wait_for(lambda s: len(events(s, "a", "zone_enter")) == 2, timeout=20)
    left, again = events(sink, "a", "zone_exit"), events(sink, "a", "zone_enter")[1]
    assert [e.payload["reason"] for e in left] == ["reconfigured"] and left[0].track_id == entered.track_id
    assert again.track_id == entered.track_id  # the same track: the tracker was not reset
    assert again.ts_ns > left[0].ts_ns and served.client.get("/api/zones/dock").json()["polygon"][0] == [40, 0]
    snap = served.stop()
    for stream in ("a", "b"):  # neither camera restarted or lost a frame
        assert sink.started.count(stream) == 1 and sink.seqs[stream] == list(range(len(sink.seqs[stream])))
        assert all(snap.streams[stream][key] == 0 for key in DROPS)


def test_a_sink_changed_on_reload_keeps_what_it_wrote_and_the_run_stays_open(tmp_path, serve):
    path, mot, db = site(tmp_path), tmp_path / "mot", tmp_path / "site.db"
    sinks = f"sinks:\n  - {{type: mot, directory: {mot}}}\n  - {{type: sqlite, path: {db}, flush_interval_s: 0.1}}\n"
    path.write_text(path.read_text().replace("runtime:", sinks + "runtime:"))
    served = serve(load_config(path), path=path)
    rows = lambda: (mot / "a.txt").read_text().splitlines() if (mot / "a.txt").exists() else []  # noqa: E731
    assert wait_until(lambda: len(rows()) >= 10, timeout=30)
    first = rows()[0]
    path.write_text(path.read_text().replace(f"{{type: mot, directory: {mot}}}",
                                             f"{{type: mot, directory: {mot}, include_coasted: true}}")
                                    .replace("flush_interval_s: 0.1}", "flush_interval_s: 0.1, batch_size: 100}"))
    reply = served.client.post("/api/reload")
    assert reply.status_code == 200 and len(reply.json()["applied"]["sinks_added"]) == 2, reply.text
    written = len(rows())
    assert wait_until(lambda: len(rows()) >= written + 10, timeout=30)
    assert rows()[0] == first  # appended to, not begun anew
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT ended_ns FROM runs").fetchall() == [(None,)]  # the run goes on
    served.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT ended_ns FROM runs").fetchone()[0] is not None


@pytest.mark.fault
def test_a_broken_file_or_a_new_detector_changes_nothing(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    good = path.read_text()
    path.write_text(good.replace("ring_size: 16", "ring_size: -1").replace("id: b", "id: c"))
    broken = served.client.post("/api/reload")
    assert broken.status_code == 400 and "site.yaml:6: streams -> 0 -> ring_size" in broken.json()["detail"]
    path.write_text(good.replace("engine: fake}", "engine: fake, conf_threshold: 0.6}").replace("id: b", "id: c"))
    engine = served.client.post("/api/reload")
    assert engine.status_code == 409 and "restart required: detector changed" in engine.json()["detail"]
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]
    path.write_text(good.replace("id: b", "id: c"))
    assert served.client.post("/api/reload").json()["applied"]["streams_added"] == ["c"]
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "c"]


def test_removing_a_camera_a_zone_names_is_refused_saying_which_zone(tmp_path, serve):
    """Before: 400 "zones -> 0 -> streams: unknown stream 'a'", of the very camera being removed."""
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    assert served.client.put("/api/lines/gate", json={"start": [0, 0], "end": [9, 9], "streams": ["a"]}).is_success
    refused = served.client.delete("/api/streams/a")
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("stream 'a' is in the streams of zone 'dock', line 'gate': take it out "
                                        "there (or remove them) first, then remove the camera; nothing was changed")
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]
    assert [s.id for s in load_config(path).streams] == ["a", "b"]


def test_a_file_saved_in_another_encoding_is_refused_on_reload_naming_its_line(tmp_path, serve):
    """Before, a reload of a file saved as Windows-1252 answered 500 (and a SIGHUP's reload thread died)."""
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    path.write_bytes(path.read_bytes().replace(b"# where trucks wait", "# où attendent les camions".encode("cp1252")))
    reply = served.client.post("/api/reload")
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"].startswith(f"{path}:12: the config file is not UTF-8 text (byte 0xf9")
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]


def test_api_changes_are_written_to_the_file_with_its_comments(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    client = served.client
    assert client.post("/api/streams", json={"id": "cam-9", "url": "fake://cam-9?fps=20"}).status_code == 201
    line = {"start": [32, 0], "end": [32, 48], "streams": ["a", "cam-9"]}
    assert client.put("/api/lines/gate", json=line).status_code == 201
    rule = {"when": "cross", "line": "gate", "cooldown_s": 0}
    assert client.put("/api/alerts/gate-crossed", json=rule).status_code == 201
    moved = client.put("/api/zones/dock", json={"polygon": [[0, 0], [50, 0], [50, 48]], "streams": ["a"]})
    assert moved.status_code == 200 and moved.json()["polygon"] == [[0, 0], [50, 0], [50, 48]]
    assert client.patch("/api/streams/b", json={"fps": 10}).status_code == 200
    assert client.delete("/api/streams/b").status_code == 204
    text = path.read_text()
    for comment in ("# loading dock, north side", "# the cameras", "# over the gate", "# where trucks wait"):
        assert comment in text
    written = load_config(path)
    assert [s.id for s in written.streams] == ["a", "cam-9"]
    assert [ln.name for ln in written.lines] == ["gate"] and written.lines[0].streams == ["a", "cam-9"]
    assert written.alerts[0].name == "gate-crossed" and written.zones[0].polygon[1] == (50.0, 0.0)
    assert written == served.runner.config  # what runs is what the file says
    assert client.post("/api/reload").json()["applied"]["analytics_changed"] is False  # nothing to undo
    assert client.delete("/api/alerts/gate-crossed").status_code == 204
    assert client.get("/api/alerts").json() == [] and load_config(path).alerts == []


def test_names_with_a_slash_are_set_read_and_removed_as_the_console_sends_them(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    client = served.client
    zone = {"polygon": [[0, 0], [60, 0], [60, 40]], "streams": ["a"]}
    assert client.put("/api/zones/gate%2Fnorth", json=zone).status_code == 201  # encodeURIComponent("gate/north")
    assert client.get("/api/zones/gate%2Fnorth").json()["name"] == "gate/north"
    assert client.put("/api/lines/in/out", json={"start": [32, 0], "end": [32, 48]}).status_code == 201
    assert [z.name for z in load_config(path).zones] == ["dock", "gate/north"]
    assert [ln.name for ln in load_config(path).lines] == ["in/out"]
    assert client.delete("/api/zones/gate%2Fnorth").status_code == 204
    assert client.delete("/api/lines/in%2Fout").status_code == 204
    assert [z["name"] for z in client.get("/api/zones").json()] == ["dock"] and client.get("/api/lines").json() == []
    listed = client.get("/api/zones/", follow_redirects=True)  # a trailing slash is the list, not a zone ''
    assert listed.history[0].status_code == 307 and listed.json() == client.get("/api/zones").json()
    unnamed = client.put("/api/zones/", json=zone, follow_redirects=True)
    assert unnamed.status_code == 405 and [z.name for z in load_config(path).zones] == ["dock"]


def test_bad_changes_get_a_4xx_naming_the_key_and_leave_file_and_pipeline_alone(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    client, before = served.client, path.read_text()
    short = client.put("/api/zones/dock", json={"polygon": [[0, 0], [5, 5]]})
    assert short.status_code == 400 and "zones -> 0 -> polygon" in short.json()["detail"]
    stranger = client.put("/api/lines/gate", json={"start": [0, 0], "end": [9, 9], "streams": ["zz"]})
    assert stranger.status_code == 400 and "unknown stream 'zz'" in stranger.json()["detail"]
    orphan = client.delete("/api/zones/dock-2")
    assert orphan.status_code == 404 and "'dock'" in orphan.json()["detail"]
    renamed = client.put("/api/zones/dock", json={"name": "yard", "polygon": [[0, 0], [5, 5], [5, 0]]})
    assert renamed.status_code == 400
    typo = client.put("/api/alerts/loiter", json={"when": "dwell", "zone": "dock", "classes": ["persn"]})
    assert typo.status_code == 400 and "alerts -> 0 -> classes: unknown class ['persn']" in typo.json()["detail"]
    gone = client.post("/api/streams", json={"id": "c", "url": str(tmp_path / "missing.mp4")})
    assert gone.status_code == 400 and "streams -> 2 -> url: no such file" in gone.json()["detail"]
    assert path.read_text() == before and served.runner.config == load_config(path)


def test_a_change_that_cannot_be_made_is_refused_before_anything_changes(tmp_path, serve, monkeypatch):
    path = site(tmp_path)
    sink = RecordingSink()
    served = serve(load_config(path), sinks=[sink], path=path)
    client, before = served.client, path.read_text()
    unicorn = client.put("/api/zones/yard", json={"polygon": [[0, 0], [9, 0], [9, 9]], "classes": ["unicorn"]})
    assert unicorn.status_code == 400 and "unicorn" in unicorn.json()["detail"]
    monkeypatch.setenv("SITE_SECRET", "hunter2-very-secret")
    leak = client.put("/api/zones/yard", json={"polygon": [[0, 0], [9, 0], [9, 9]], "classes": ["${SITE_SECRET}"]})
    assert leak.status_code == 400 and "hunter2" not in leak.text
    assert path.read_text() == before and client.get("/api/zones").json()[0]["name"] == "dock"
    assert client.post("/api/streams", json={"id": "c", "url": "fake://c?fps=20"}).status_code == 201  # still fine
    assert sink.wait_for(lambda s: len(s.seqs["c"]) >= 5, timeout=20)


def test_a_camera_this_machine_cannot_decode_is_refused_and_neither_written_nor_started(tmp_path, serve):
    """Before, it was written to the file and then failed to start (500): the file then failed at the next start."""
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    if served.runner.parts.plan.machine.nvdec:
        pytest.skip("this machine has NVDEC")
    before = path.read_text()
    nvdec = served.client.post("/api/streams", json={"id": "c", "url": "rtsp://127.0.0.1:9/live", "decode": "nvdec"})
    assert nvdec.status_code == 400 and "decode 'nvdec' cannot run here" in nvdec.json()["detail"], nvdec.text
    assert path.read_text() == before and [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]


def test_what_a_request_sends_is_never_read_from_the_environment_nor_echoed(tmp_path, serve, monkeypatch):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    client, before = served.client, path.read_text()
    monkeypatch.setenv("SITE_SECRET", "hunter2-very-secret")
    named = client.put("/api/zones/${SITE_SECRET}", json={"polygon": [[0, 0], [9, 0], [9, 9]]})
    assert named.status_code == 400 and "hunter2" not in client.get("/api/zones").text
    deep: dict = {}
    for _ in range(400):
        deep = {"x": deep}
    nested = client.put("/api/zones/yard", json={"polygon": [[0, 0], [9, 0], [9, 9]], "extra": deep})
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["detail"]
    invalid = client.post("/api/streams", json={"id": "c", "url": "rtsp://admin:hunter2@10.0.0.5/live", "loop": True})
    assert invalid.status_code == 422 and "hunter2" not in invalid.text and "only a file can loop" in invalid.text
    assert path.read_text() == before


def test_a_camera_url_its_source_refuses_is_named_without_its_password(tmp_path, serve, monkeypatch):
    """A source's own check (a plugin's) may quote the URL it refuses: the answer, which any API client reads, and
    the log name it with its credentials masked."""
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    monkeypatch.setenv("CAM_PASSWORD", "hunter2-very-secret")
    path.write_text(path.read_text().replace("url: fake://b?fps=8", "url: fake://viewer:${CAM_PASSWORD}@b?fps=0"))
    refused = served.client.post("/api/reload")
    assert refused.status_code == 400
    assert "hunter2" not in refused.text and "fake://***@b?fps=0: fps must be > 0" in refused.json()["detail"]


def test_a_file_edited_while_the_pipeline_started_is_not_taken_as_applied(tmp_path, serve):
    path = site(tmp_path)
    text = path.read_text()
    config = load_config(path)
    path.write_text(text.replace("id: b", "id: b2"))  # while the engine loads, say
    served = serve(config, path=path, applied=text)
    refused = served.client.put("/api/lines/gate", json={"start": [0, 0], "end": [9, 9]})
    assert refused.status_code == 409 and "reload it first" in refused.json()["detail"]
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]


def test_a_file_edited_by_hand_is_reloaded_before_the_api_changes_it(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    path.write_text(path.read_text().replace("id: b", "id: b2"))  # edited, not yet reloaded
    refused = served.client.put("/api/lines/gate", json={"start": [0, 0], "end": [9, 9]})
    assert refused.status_code == 409 and "reload it first" in refused.json()["detail"]
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]  # not applied in passing
    assert served.client.post("/api/reload").json()["applied"]["streams_added"] == ["b2"]
    assert served.client.put("/api/lines/gate", json={"start": [0, 0], "end": [9, 9]}).status_code == 201
    assert "id: b2" in path.read_text() and "name: gate" in path.read_text()


def test_giving_a_zone_to_one_more_camera_leaves_the_visits_on_the_others_open(tmp_path, serve):
    path = site(tmp_path)
    sink = RecordingSink()
    served = serve(load_config(path), sinks=[sink], path=path)
    assert sink.wait_for(lambda s: events(s, "a", "zone_enter"), timeout=20)
    polygon = [[4, 0], [60, 0], [60, 48], [4, 48]]
    assert served.client.put("/api/zones/dock", json={"polygon": polygon, "streams": ["a", "b"]}).status_code == 200
    assert sink.wait_for(lambda s: events(s, "b", "zone_enter"), timeout=20)
    served.stop()
    assert "reconfigured" not in [e.payload["reason"] for e in events(sink, "a", "zone_exit")]
    assert len(events(sink, "a", "zone_enter")) == 1


def test_a_file_stream_whose_file_is_gone_once_it_finished_leaves_later_changes_alone(tmp_path, serve):
    """Before, every later change was refused ("no such file"): each stream's file was looked for, not only those of
    the streams a change adds or restarts."""
    path, clip = site(tmp_path), write_clip(tmp_path / "clip.mp4", frames=10, size=(64, 48))
    path.write_text(path.read_text().replace("  - id: b\n", f"  - id: clip\n    url: {clip}\n  - id: b\n"))
    sink = RecordingSink()
    served = serve(load_config(path), sinks=[sink], path=path)
    assert sink.wait_for(lambda s: "clip" in s.ended, timeout=20)
    clip.unlink()
    moved = served.client.put("/api/zones/dock", json={"polygon": [[40, 0], [60, 0], [60, 48], [40, 48]]})
    assert moved.status_code == 200, moved.text
    assert served.client.post("/api/streams", json={"id": "c", "url": "fake://c?fps=20"}).status_code == 201
    again = served.client.post("/api/streams", json={"id": "d", "url": str(clip)})  # a stream added is looked for
    assert again.status_code == 400 and "streams -> 4 -> url: no such file" in again.json()["detail"]


def test_changes_are_refused_once_the_pipeline_has_stopped(tmp_path, serve):
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    served.stop()
    with pytest.raises(PipelineError, match="not running"):
        served.service.control.put("zones", "yard", {"polygon": [[0, 0], [5, 5], [5, 0]]})
    assert "yard" not in path.read_text()


def test_sighup_reloads_the_file_of_a_running_service(tmp_path):
    port = free_port()
    path = tmp_path / "site.yaml"
    data = config_data(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}], runtime={
        "http": {"port": port}, "outbox_path": str(tmp_path / "outbox.db")})
    path.write_text(yaml.safe_dump(data))
    with ServiceProcess([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet"], port) as service:
        assert service.poll(lambda: service.status("/readyz") == 200)
        data["streams"].append({"id": "b", "url": "fake://b?fps=40"})
        path.write_text(yaml.safe_dump(data))
        service.proc.send_signal(signal.SIGHUP)
        assert service.poll(lambda: [s["id"] for s in service.client.get("/api/streams").json()] == ["a", "b"])
        assert service.poll(lambda: service.client.get("/api/streams/b").json()["counters"]["staged"] > 0)
    assert service.returncode == 0, service.err
    assert "reloaded" in service.err and "'streams_added': ['b']" in service.err


def test_sinks_added_and_removed_on_reload_open_and_close_while_the_cameras_run(tmp_path, serve):
    path = site(tmp_path)
    recording = RecordingSink()
    served = serve(load_config(path), sinks=[recording], path=path)
    detections, events_log = tmp_path / "detections.jsonl", tmp_path / "events.jsonl"
    marks = "stages:\n  - {python: 'pipeline.testing:MarkEveryNth', options: {every: 5}}\n"
    sinks = (f"sinks:\n  - {{type: jsonl, path: '{detections}', overflow: block}}\n"
             f"  - {{type: jsonl, what: events, path: '{events_log}'}}\n")
    path.write_text(path.read_text() + marks + sinks)
    reply = served.client.post("/api/reload")
    assert reply.status_code == 200, reply.text
    assert reply.json()["applied"]["sinks_added"] == ["jsonl", "jsonl"]
    assert recording.wait_for(lambda s: len([e for e in s.events["b"] if e.kind == "mark"]) >= 4, timeout=20)
    path.write_text(path.read_text().replace(sinks, ""))  # both taken out again
    assert served.client.post("/api/reload").json()["applied"]["sinks_removed"] == ["jsonl", "jsonl"]
    written = [json.loads(line) for line in detections.read_text().splitlines()]
    logged = [json.loads(line) for line in events_log.read_text().splitlines()]
    marks_seen = len([e for e in recording.events["b"] if e.kind == "mark"])
    assert recording.wait_for(lambda s: len([e for e in s.events["b"] if e.kind == "mark"]) >= marks_seen + 2, 20)
    assert detections.read_text().count("\n") == len(written)  # closed: nothing more is written
    assert events_log.read_text().count("\n") == len(logged)
    for stream in ("a", "b"):  # it joined the running cameras mid-stream, then got every frame the others got
        seqs = [r["seq"] for r in written if r["stream_id"] == stream]
        assert seqs and seqs == [seq for seq in recording.seqs[stream] if seqs[0] <= seq <= seqs[-1]]
    assert {e["kind"] for e in logged} >= {"mark"} and {e["stream_id"] for e in logged} == {"a", "b"}
    snap = served.stop()
    assert all(recording.started.count(stream) == 1 for stream in ("a", "b"))
    assert all(snap.streams[stream][key] == 0 for stream in ("a", "b") for key in DROPS)


def test_a_reload_naming_an_output_as_another_is_named_by_default_is_refused_before_anything_changes(tmp_path, serve):
    """The outbox keys each output's cursor by its name: a `name:` equal to another output's default name (from its
    broker) was let through and refused half-way, after the MQTT output had connected (and it stayed connected)."""
    path = site(tmp_path)
    served = serve(load_config(path), path=path)
    good = path.read_text()
    outputs = ("sinks:\n  - {type: mqtt, port: 9}\n"
               "  - {type: webhook, url: 'http://127.0.0.1:9/a', name: 'mqtt:127.0.0.1:9/streamweave'}\n")
    path.write_text(good.replace("id: b", "id: c") + outputs)
    reply = served.client.post("/api/reload")
    assert reply.status_code == 400, reply.text
    assert ("sinks -> 1 -> name: output name 'mqtt:127.0.0.1:9/streamweave' is already taken by sinks -> 0 (its "
            "default name); give one of them another `name:`") in reply.json()["detail"]
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "b"]
    path.write_text(good.replace("id: b", "id: c") + outputs.replace("name: 'mqtt:127.0.0.1:9/streamweave'", "name: a"))
    reply = served.client.post("/api/reload")
    assert reply.status_code == 200 and reply.json()["applied"]["sinks_added"] == ["mqtt", "webhook"], reply.text


MARKS = "stages:\n  - {python: 'pipeline.testing:MarkEveryNth', options: {every: 5}}\n"


def stored_ids(outbox) -> list[str]:
    """The event ids the outbox holds, in the order it stores them."""
    with sqlite3.connect(outbox) as db:
        return [event_id for (event_id,) in db.execute("SELECT event_id FROM events ORDER BY seq")]


def left_behind(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "was taken out with" in r.getMessage()]


def test_a_webhook_whose_url_changes_under_its_name_takes_its_backlog_and_none_is_said_left_behind(
        tmp_path, serve, caplog):
    """A reload replaces a changed entry by taking it out and adding it again: one that keeps its `name:` delivers
    what the old one had not, and the log said it was left behind, telling to give it the name it already had."""
    path, outbox, receiver = site(tmp_path), tmp_path / "outbox.db", RecordingHttpServer().start()
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    path.write_text(path.read_text() + MARKS + f"sinks:\n  - {{type: webhook, url: '{down}', name: alarms}}\n")
    served = serve(load_config(path), path=path)
    try:
        assert wait_until(lambda: len(stored_ids(outbox)) >= 3, timeout=20)
        backlog = stored_ids(outbox)[:3]
        path.write_text(path.read_text().replace(down, receiver.url()))
        reply = served.client.post("/api/reload")
        assert reply.status_code == 200 and reply.json()["applied"]["sinks_added"] == ["webhook"], reply.text
        received = receiver.wait_for(3, timeout=20)
    finally:
        served.stop()  # before the receiver: a stop waits for what the outputs can still take
        receiver.stop()
    assert [r.json()["event_id"] for r in received[:3]] == backlog
    assert left_behind(caplog) == []


def test_a_webhook_replaced_under_another_name_says_what_it_left_and_the_name_that_delivers_it(
        tmp_path, serve, caplog):
    path, outbox, receiver = site(tmp_path), tmp_path / "outbox.db", RecordingHttpServer().start()
    down = f"http://127.0.0.1:{free_port()}/hook"
    path.write_text(path.read_text() + MARKS + f"sinks:\n  - {{type: webhook, url: '{down}'}}\n")
    served = serve(load_config(path), path=path)
    try:
        assert wait_until(lambda: len(stored_ids(outbox)) >= 3, timeout=20)
        path.write_text(path.read_text().replace(down, receiver.url()))  # a new url, so a new default name
        reply = served.client.post("/api/reload")
        assert reply.status_code == 200, reply.text
    finally:
        served.stop()  # before the receiver: a stop waits for what the outputs can still take
        receiver.stop()
    old = WebhookConfig(type="webhook", url=down).outbox_name
    [warning] = left_behind(caplog)
    assert warning.startswith(f"output '{old}' was taken out with ") and f"`name: {old}`" in warning
    assert int(re.search(r"with (\d+) events it had not delivered", warning)[1]) >= 3
