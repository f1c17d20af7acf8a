"""The HTTP API against a running pipeline (real HTTP on loopback; fake cameras and engine)."""
from __future__ import annotations

import gc
import logging
import os
import resource
import shlex
import socket
import sys
import threading
import time

import psutil
import pytest
import yaml

from pipeline.config.models import HttpConfig
from pipeline.errors import ConfigError, NoSuchStream, PipelineError
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Service, server
from pipeline.service.control import Control
from pipeline.testing import RecordingSink
from tests.conftest import REPO
from tests.support.http_server import free_port
from tests.support.service import DROPS, ServiceProcess, config, config_data
from tests.support.waiting import wait_until



def test_a_camera_added_and_removed_over_http_leaves_the_others_untouched(tmp_path, serve):
    # Earlier tests' files that wait only for the collector are closed now, not during the count. Not while
    # the camera runs: a full collection of a large heap holds the interpreter longer than its ring lasts.
    gc.collect()
    sink = RecordingSink()
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=40", "ring_size": 16}]), sinks=[sink])
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 10, timeout=20)
    assert served.client.get("/api/streams").status_code == 200  # the server's worker thread and connection
    threads_before, files_before = threading.active_count(), len(os.listdir("/proc/self/fd"))
    added = served.client.post("/api/streams", json={"id": "cam-2", "url": "fake://cam-2?fps=40", "ring_size": 16})
    assert added.status_code == 201, added.text
    assert added.json()["id"] == "cam-2" and added.json()["live"] is True
    assert sink.wait_for(lambda s: len(s.seqs["cam-2"]) >= 20, timeout=20)
    listed = served.client.get("/api/streams").json()
    assert [s["id"] for s in listed] == ["a", "cam-2"] and all(s["state"] == "running" for s in listed)
    assert all(0 < s["latency_s"] < 30 for s in listed)  # capture to detections of its last frame
    assert served.client.delete("/api/streams/cam-2").status_code == 204
    assert served.client.get("/api/streams/cam-2").status_code == 404
    assert not [t.name for t in threading.enumerate() if "cam-2" in t.name]  # its worker is gone
    assert (threading.active_count(), len(os.listdir("/proc/self/fd"))) == (threads_before, files_before)
    a_now = len(sink.seqs["a"])
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= a_now + 10, timeout=20)
    snap = served.stop()
    seqs = sink.seqs["a"]
    assert seqs == list(range(len(seqs))) and all(snap.streams["a"][key] == 0 for key in DROPS)
    assert sink.seqs["cam-2"] == list(range(len(sink.seqs["cam-2"])))


class SlowEnd(RecordingSink):
    """Ends stream "cam" only once `gate` is set: its last frames take longer than the API waits for a removal
    or a pause (10 s)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()

    def on_stream_end(self, stream_id: str) -> None:
        if stream_id == "cam":
            self.gate.wait(60)
        super().on_stream_end(stream_id)


def test_a_camera_added_again_while_its_removal_is_still_finishing_runs_once_it_has_gone(tmp_path, serve):
    sink = SlowEnd()
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]), sinks=[sink])
    camera = {"id": "cam", "url": "fake://cam?fps=20"}
    assert served.client.post("/api/streams", json=camera).status_code == 201
    assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 5, timeout=20)
    assert served.client.delete("/api/streams/cam").status_code == 204  # after 10 s, still finishing
    assert served.client.get("/api/streams/cam").status_code == 404
    added: list = []
    again = threading.Thread(target=lambda: added.append(served.client.post("/api/streams", json=camera)))
    again.start()
    sink.gate.set()
    again.join(30)
    assert added and added[0].status_code == 201, added and added[0].text
    assert sink.wait_for(lambda s: s.started.count("cam") == 2 and len(s.seqs["cam"]) >= 5 + 5, timeout=20)
    assert [s["id"] for s in served.client.get("/api/streams").json()] == ["a", "cam"]


def test_a_pause_still_finishing_answers_202_refuses_a_resume_meanwhile_and_then_answers_paused(tmp_path, serve):
    sink = SlowEnd()
    served = serve(config(tmp_path, [{"id": "cam", "url": "fake://cam?fps=20"}]), sinks=[sink])
    assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 5, timeout=20)
    first = served.client.post("/api/streams/cam/pause")
    assert first.status_code == 202 and first.json()["state"].startswith("pausing"), first.text
    resumed = served.client.post("/api/streams/cam/resume")
    assert resumed.status_code == 503 and "still stopping" in resumed.text  # not half-restarted meanwhile
    again: list = []
    waiting = threading.Thread(target=lambda: again.append(served.client.post("/api/streams/cam/pause")))
    waiting.start()
    sink.gate.set()
    waiting.join(30)
    assert again and again[0].status_code == 200 and again[0].json()["state"] == "paused", again and again[0].text
    assert served.client.post("/api/streams/cam/resume").status_code == 200
    assert sink.wait_for(lambda s: s.started.count("cam") == 2 and len(s.seqs["cam"]) >= 5 + 5, timeout=20)


def test_a_pause_and_a_resume_are_logged_naming_the_camera(tmp_path, serve, caplog):
    """Before, a camera paused through the API stopped without a word in the log."""
    sink = RecordingSink()
    served = serve(config(tmp_path, [{"id": "gate-2", "url": "fake://gate-2?fps=20"}]), sinks=[sink])
    assert sink.wait_for(lambda s: len(s.seqs["gate-2"]) >= 5, timeout=20)
    with caplog.at_level(logging.INFO, logger="pipeline.service.control"):
        assert served.client.post("/api/streams/gate-2/pause").status_code == 200
        assert served.client.post("/api/streams/gate-2/resume").status_code == 200
        assert served.client.post("/api/streams/gate-2/resume").status_code == 200  # running: nothing to say
    assert [r.getMessage() for r in caplog.records if r.name == "pipeline.service.control"] == [
        "stream 'gate-2' paused through the API", "stream 'gate-2' resumed through the API"]


def test_cameras_stay_listed_in_the_config_order_after_a_pause_a_resume_and_a_change(tmp_path, serve):
    """Before, a camera resumed or changed moved to the end of /api/streams (and of the console's cameras)."""
    cams = [{"id": cam, "url": f"fake://{cam}?fps=20"} for cam in ("a", "b", "c")]
    served = serve(config(tmp_path, cams))
    client = served.client
    assert client.post("/api/streams/b/pause").status_code == 200
    assert [s["id"] for s in client.get("/api/streams").json()] == ["a", "b", "c"]
    assert client.post("/api/streams/b/resume").status_code == 200
    assert client.patch("/api/streams/a", json={"fps": 10}).status_code == 200
    assert [s["id"] for s in client.get("/api/streams").json()] == ["a", "b", "c"]
    assert [s["id"] for s in client.get("/api/config").json()["streams"]] == ["a", "b", "c"]


def test_bad_requests_get_a_4xx_that_says_why_and_change_nothing(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]))
    client = served.client
    missing = client.post("/api/streams", json={"id": "b"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "url"]
    typo = client.post("/api/streams", json={"id": "b", "url": "fake://b", "lan": "default"})
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "lan"]
    bad_url = client.post("/api/streams", json={"id": "b", "url": "thermal://b"})
    assert bad_url.status_code == 422 and "no source reads 'thermal://'" in bad_url.text
    assert client.post("/api/streams", json={"id": "a", "url": "fake://a2"}).status_code == 409
    lane = client.post("/api/streams", json={"id": "b", "url": "fake://b", "lane": "fast"})
    assert lane.status_code == 400 and "unknown lane 'fast'" in lane.json()["detail"]
    assert client.delete("/api/streams/zz").status_code == 404
    huge = client.post("/api/streams", content=b"[" * (5 * 1024 * 1024), headers={"content-type": "application/json"})
    assert huge.status_code == 413  # bodies are read before the token is checked: not without a bound
    assert [s["id"] for s in client.get("/api/streams").json()] == ["a"]


def test_health_readiness_metrics_docs_and_the_masked_config_are_served(tmp_path, serve):
    sink = RecordingSink()
    hook = {"type": "webhook", "url": "HTTP://127.0.0.1:9/services/T0/B0/hooksecret?sig=abc"}
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://admin:s3cret@a?fps=20"}], sinks=[hook]), sinks=[sink])
    client = served.client
    assert client.get("/healthz").json() == {"status": "alive"}
    assert sink.wait_for(lambda s: s.seqs["a"], timeout=20)  # a camera delivers: ready
    assert client.get("/readyz").json() == {"ready": True, "detector_failing": False}
    assert "streamweave_stream_frames_decoded_total" in client.get("/metrics").text
    assert client.get("/openapi.json").json()["info"]["title"] == "streamweave" and client.get("/docs").status_code == 200
    effective = client.get("/api/config").json()
    assert effective["streams"][0]["url"] == "fake://***@a?fps=20" and "s3cret" not in client.get("/status").text
    assert effective["sinks"][0]["url"] == "http://127.0.0.1:9/***?sig=***" and "hooksecret" not in client.get("/status").text


def test_a_service_whose_cameras_deliver_nothing_is_alive_but_not_ready(tmp_path, serve):
    gone = {"id": "gone", "url": "rtsp://127.0.0.1:9/nothing", "reconnect_min_s": 5, "reconnect_max_s": 5}
    served = serve(config(tmp_path, [gone]))
    assert served.client.get("/healthz").status_code == 200
    reply = served.client.get("/readyz")
    assert reply.status_code == 503 and reply.json() == {"ready": False, "detector_failing": False}
    assert served.client.get("/api/streams/gone").json()["state"] != "running"


def test_a_service_whose_cameras_are_all_paused_stays_ready(tmp_path, serve):
    """Before, pausing every camera (maintenance) made /readyz answer 503: the pod was taken out of its Service."""
    sink = RecordingSink()
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}, {"id": "b", "url": "fake://b?fps=20"}]),
                   sinks=[sink])
    client = served.client
    assert sink.wait_for(lambda s: s.seqs["a"] and s.seqs["b"], timeout=20)
    assert client.post("/api/streams/a/pause").status_code == 200
    assert client.get("/readyz").status_code == 200  # b delivers
    assert client.post("/api/streams/b/pause").status_code == 200
    assert client.get("/readyz").json() == {"ready": True, "detector_failing": False}


@pytest.mark.fault
def test_a_stalled_camera_shows_stalled_not_ready_and_not_up_until_its_frames_come_again(tmp_path, serve):
    sink = RecordingSink()
    camera = {"id": "cam", "url": "fake://cam?fps=50&stall_at=20&stall_s=4", "read_timeout_s": 0.3}
    served = serve(config(tmp_path, [camera]), sinks=[sink])
    client = served.client

    def state() -> str:
        return client.get("/status").json()["streams"]["cam"]["state"]

    assert wait_until(lambda: state() == "stalled", timeout=20)
    stalled = client.get("/api/streams/cam").json()
    assert stalled["state"] == "stalled" and stalled["latency_s"] is None and stalled["fps"] == 0  # not from before
    assert client.get("/readyz").status_code == 503
    assert 'streamweave_stream_up{stream="cam"} 0.0' in client.get("/metrics").text
    assert len(sink.seqs["cam"]) <= 20
    assert wait_until(lambda: state() == "running", timeout=20)
    assert client.get("/readyz").status_code == 200
    assert wait_until(lambda: client.get("/api/streams/cam").json()["latency_s"] is not None, timeout=20)
    assert sink.wait_for(lambda s: len(s.seqs["cam"]) > 20, timeout=20)


def test_a_stream_id_without_a_letter_or_digit_is_refused_in_the_file_and_over_http(tmp_path, serve):
    with pytest.raises(ValueError, match=r"'\.\.' has no letter or digit; a stream id names a folder"):
        config(tmp_path, [{"id": "..", "url": "fake://x"}])
    client = serve(config(tmp_path, [])).client
    for bad in (".", "..", "_-"):
        refused = client.post("/api/streams", json={"id": bad, "url": "fake://x?fps=10"})
        assert refused.status_code == 422 and "has no letter or digit" in refused.text, refused.text
    assert client.post("/api/streams", json={"id": "cam.1", "url": "fake://x?fps=10"}).status_code == 201
    assert [s["id"] for s in client.get("/api/streams").json()] == ["cam.1"]


def test_a_port_in_use_is_a_config_error_before_anything_starts(tmp_path, serve):
    served = serve(config(tmp_path, []))
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{served.service.port}"):
        Service(PipelineRunner(config(tmp_path, [])), HttpConfig(port=served.service.port))


def test_run_without_a_duration_is_a_service_that_starts_empty_and_takes_cameras(tmp_path):
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, [], runtime={
        "http": {"port": port}, "outbox_path": str(tmp_path / "outbox.db")})))
    with ServiceProcess([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet"], port) as service:
        assert service.poll(lambda: service.status("/readyz") == 200)
        assert service.client.post("/api/streams", json={"id": "cam", "url": "fake://cam?fps=40"}).status_code == 201
        assert service.poll(lambda: service.client.get("/api/streams/cam").json()["counters"]["staged"] >= 20)
    assert service.returncode == 0, service.err
    assert "SIGTERM received" in service.err and "on 1 streams" in service.out


def test_connections_that_send_nothing_are_closed_and_the_server_answers_on(tmp_path, serve):
    served = serve(config(tmp_path, []))
    idle = [socket.create_connection(("127.0.0.1", served.service.port), timeout=60) for _ in range(20)]
    try:
        assert [sock.recv(1) for sock in idle] == [b""] * 20  # each closed by the server, not by a timeout here
    finally:
        for sock in idle:
            sock.close()
    assert served.client.get("/healthz").status_code == 200


def test_connections_trickling_a_request_are_closed_once_it_has_not_arrived_whole_in_time(tmp_path, serve,
                                                                                             monkeypatch):
    monkeypatch.setattr(server, "REQUEST_READ_S", 1.0)
    served = serve(config(tmp_path, []))
    stalled, trickling, pipelined = (socket.create_connection(("127.0.0.1", served.service.port), timeout=30)
                                     for _ in range(3))
    try:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert stalled.recv(1) == b""  # closed by the server, not by the timeout here
        pipelined.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # a whole request, then half one
                          b"PUT /api/zones/door HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 90\r\n\r\n{")
        answered = b"".join(iter(lambda: pipelined.recv(4096), b""))  # until the server closes it
        assert answered.startswith(b"HTTP/1.1 200") and answered.count(b"HTTP/1.1") == 1
        with pytest.raises(OSError):  # the server closed it: a send fails (broken pipe or reset)
            for byte in b"PUT /api/zones/door HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 150:
                trickling.sendall(bytes([byte]))  # a byte every 0.1 s (the client's pace): each would stop the
                time.sleep(0.1)  # keep-alive timer, and all of it takes 19 s
    finally:
        for sock in (stalled, trickling, pipelined):
            sock.close()
    assert served.client.get("/healthz").status_code == 200


def test_a_service_raises_its_soft_limit_of_open_files_to_the_hard_one(tmp_path):
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, [], runtime={
        "http": {"port": port}, "outbox_path": str(tmp_path / "outbox.db")})))
    usual = min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # a shell's or systemd's soft limit
    run = shlex.join([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet"])
    with ServiceProcess(["bash", "-c", f"ulimit -Sn {usual} && exec {run}"], port) as service:
        assert service.poll(lambda: service.status("/healthz") == 200)
        soft, hard = psutil.Process(service.proc.pid).rlimit(psutil.RLIMIT_NOFILE)
    assert soft == hard, f"soft limit {soft}, hard {hard}"


def test_patching_one_camera_restarts_it_alone_and_pause_resume_keep_it_listed(tmp_path, serve):
    sink = RecordingSink()
    cams = [{"id": "a", "url": "fake://a?fps=40", "ring_size": 16}, {"id": "b", "url": "fake://b?fps=40"}]
    served = serve(config(tmp_path, cams), sinks=[sink])
    client = served.client
    assert sink.wait_for(lambda s: min(len(s.seqs["a"]), len(s.seqs["b"])) >= 10, timeout=20)
    patched = client.patch("/api/streams/b", json={"fps": 10})
    assert patched.status_code == 200, patched.text
    assert sink.wait_for(lambda s: s.started.count("b") == 2 and len(s.seqs["b"]) >= 25, timeout=20)
    assert client.get("/api/streams/b").json()["counters"]["dropped_fps_cap"] > 0  # the new cap works
    assert client.patch("/api/streams/b", json={"ring_size": 2}).status_code == 422  # not changeable live
    assert client.patch("/api/streams/b", json={"lane": "fast"}).status_code == 400

    assert client.post("/api/streams/b/pause").json()["state"] == "paused"
    paused_at = len(sink.seqs["b"])
    a_now = len(sink.seqs["a"])
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= a_now + 20, timeout=20)
    assert len(sink.seqs["b"]) == paused_at and [s["id"] for s in client.get("/api/streams").json()] == ["a", "b"]
    assert client.post("/api/streams/b/resume").status_code == 200
    assert sink.wait_for(lambda s: s.started.count("b") == 3 and len(s.seqs["b"]) > paused_at, timeout=20)
    assert client.post("/api/streams/a/resume").json()["state"] != "paused"  # running: it runs on, not restarted
    assert client.post("/api/streams/nope/resume").status_code == 404
    snap = served.stop()
    seqs = sink.seqs["a"]
    assert seqs == list(range(len(seqs))) and all(snap.streams["a"][key] == 0 for key in DROPS)


def test_a_change_while_the_configured_cameras_start_is_refused_and_the_start_goes_on(tmp_path, monkeypatch):
    runner = PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a?fps=10&live=1"},
                                              {"id": "b", "url": "fake://b?fps=10&live=1"}]))
    control = Control(runner)
    starting_b, go_on = threading.Event(), threading.Event()
    add = runner.table.add

    def slow_add(stream):  # the configured cameras start one at a time: b's start takes a while
        if stream.id == "b":
            starting_b.set()
            go_on.wait(10)
        add(stream)

    monkeypatch.setattr(runner.table, "add", slow_add)
    thread = threading.Thread(target=runner.run, kwargs={"until_stopped": True})
    thread.start()
    try:
        assert starting_b.wait(10)
        with pytest.raises(PipelineError, match="still starting its cameras"):  # b would look added, twice
            control.add_stream({"id": "x", "url": "fake://x?fps=10&live=1"})
        go_on.set()
        assert runner.running.wait(10)
        control.add_stream({"id": "x", "url": "fake://x?fps=10&live=1"})
        assert sorted(runner.snapshot().streams) == ["a", "b", "x"]
    finally:
        go_on.set()
        runner.request_stop()
        thread.join(30)
    assert not thread.is_alive() and runner.snapshot().streams["b"]["frames"] > 0


class _HeldSink(RecordingSink):
    """Holds every frame of stream `a` until `release` is set: `a`'s removal cannot finish before."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def on_frame(self, result) -> None:
        if result.frame.stream_id == "a":
            self.release.wait(30)
        super().on_frame(result)


def test_a_camera_still_stopping_after_its_removal_cannot_be_paused_or_resumed_back(tmp_path):
    sink = _HeldSink()
    runner = PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a?fps=10&live=1"},
                                              {"id": "b", "url": "fake://b?fps=10&live=1"}]), sinks=[sink])
    thread = threading.Thread(target=runner.run, kwargs={"until_stopped": True})
    thread.start()
    try:
        assert runner.running.wait(20)
        assert runner.table.remove("a", timeout=0) is False  # its frames wait in the held sink: still stopping
        with pytest.raises(NoSuchStream):
            runner.table.pause("a")
        with pytest.raises(NoSuchStream):
            runner.table.resume("a")
        assert runner.table.paused() == set() and [c.id for c in runner.table.configs()] == ["b"]
        sink.release.set()
        assert wait_until(lambda: "a" not in runner.snapshot().streams, timeout=20)
        assert runner.table.paused() == set() and [c.id for c in runner.table.configs()] == ["b"]
    finally:
        sink.release.set()
        runner.request_stop()
        thread.join(30)


def test_streams_set_by_a_fleet_leave_out_those_this_instance_cannot_run_and_run_the_others(tmp_path, shared):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(shared("media/dog-848x464.mp4").read_bytes())
    looped = {"id": "f", "url": str(clip), "loop": True}
    runner = PipelineRunner(config(tmp_path, [looped, {"id": "a", "url": "fake://a?fps=10&live=1"}]))
    control = Control(runner)
    thread = threading.Thread(target=runner.run, kwargs={"until_stopped": True})
    thread.start()
    try:
        assert runner.running.wait(20)
        streams = [runner.config.streams[0], runner.config.streams[1],
                   runner.config.streams[1].model_copy(update={"id": "gone", "url": str(tmp_path / "none.mp4")})]
        refused = control.set_streams(streams)
        assert list(refused) == ["gone"] and "none.mp4" in refused["gone"]
        assert sorted(c.id for c in runner.table.configs()) == ["a", "f"]
        clip.unlink()  # the running file's file goes away: it runs on, and the next change applies
        b = streams[1].model_copy(update={"id": "b", "url": "fake://b?fps=10"})
        refused = control.set_streams([*streams[:2], b])
        assert refused == {} and sorted(c.id for c in runner.table.configs()) == ["a", "b", "f"]
    finally:
        runner.request_stop()
        thread.join(30)
