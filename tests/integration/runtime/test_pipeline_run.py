"""The whole pipeline on real clips, a real RTSP server and real storage, as `run` drives it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from pipeline.config.models import PipelineConfig
from pipeline.detect.detector import Detector
from pipeline.runtime.runner import PipelineRunner
from pipeline.sinks.base import BaseSink
from pipeline.sinks.storage.query import (
    counts_by_stream_and_class,
    detections_for_stream,
)
from pipeline.types import Frame, FrameBatch
from tests.conftest import REPO, shared_file
from tests.support.http_server import free_port
from tests.support.waiting import wait_until
from tests.support.rtsp_server import RtspServer, concat_clip, gst_rtsp_available

MODEL = "models/yolox_nano_416_dynbatch.onnx"


def config_for(tmp_path: Path, streams: list[dict], **extra) -> PipelineConfig:
    data = {
        "streams": streams,
        "lanes": [{"name": "default", "max_batch": 8, "max_wait_ms": 30},
                  {"name": "priority", "priority": 10, "max_batch": 2, "max_wait_ms": 10}],
        "detector": {"model": str(shared_file(MODEL)), "conf_threshold": 0.2},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "out.db")}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
        **extra,
    }
    return PipelineConfig.model_validate(data)


@pytest.fixture
def rtsp_url(tmp_path_factory):
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    clip = concat_clip(shared_file("media/person-bicycle-car-detection.mp4"),
                       tmp_path_factory.mktemp("rtsp") / "pbc-x3.mp4", copies=3)
    server = RtspServer(clip, free_port()).start()
    yield server.url
    server.kill()


def test_files_and_rtsp_mixed_store_detections_for_every_stream(tmp_path, rtsp_url):
    config = config_for(tmp_path, [
        {"id": "lot", "url": str(shared_file("media/car-detection.mp4")), "fps": 5},
        {"id": "dog", "url": str(shared_file("media/dog-848x464.mp4")), "lane": "priority"},
        {"id": "live", "url": rtsp_url, "fps": 5},
    ])
    snap = PipelineRunner(config).run(duration_s=12)
    counts = counts_by_stream_and_class(tmp_path / "out.db")
    assert set(counts) == {"lot", "dog", "live"}
    assert sum(counts["lot"].get(c, 0) for c in ("car", "bus", "truck")) >= 3, counts["lot"]
    assert counts["dog"].get("dog", 0) >= 20, counts["dog"]
    assert counts["live"].get("car", 0) + counts["live"].get("person", 0) > 0, counts["live"]
    assert snap.streams["lot"]["state"] == "finished" and snap.streams["dog"]["state"] == "finished"
    assert not snap.sink_failures


def test_pipeline_stores_exactly_what_the_detector_finds_in_every_frame(tmp_path):
    """Batching across streams, lanes and storage lose and change nothing: compare with the bare detector."""
    clip = shared_file("media/car-detection.mp4")
    config = config_for(tmp_path, [{"id": "lot", "url": str(clip)},
                                   {"id": "dog", "url": str(shared_file("media/dog-848x464.mp4"))}],
                        tracker={"enabled": False})
    runner = PipelineRunner(config)
    snap = runner.run()
    with av.open(str(clip)) as container:
        images = list(container.decode(video=0))
    assert snap.streams["lot"]["batched"] == len(images)  # a file loses no frame
    stored = detections_for_stream(tmp_path / "out.db", "lot")

    detector = Detector(config.detector)
    expected = []
    for start in range(0, len(images), 8):
        rows = images[start:start + 8]
        frames = [Frame("lot", start + i, 0, 0, im, 768, 432, "avframe") for i, im in enumerate(rows)]
        dets = detector(FrameBatch(frames, "x"))
        expected += [(start + int(r), int(c), b) for r, c, b in zip(dets.frame_idx, dets.class_id, dets.xyxy)]
    assert len(stored.seq) == len(expected)
    by_frame = {}
    for seq, cls, box in expected:
        by_frame.setdefault((seq, cls), []).append(box)
    for seq, cls, box in zip(stored.seq, stored.class_id, stored.xyxy):
        candidates = np.array(by_frame[(int(seq), int(cls))])
        assert np.abs(candidates - box).max(axis=1).min() < 0.5

    vehicles = np.isin(stored.class_id, [2, 5, 7])
    assert len(set(stored.seq[vehicles].tolist())) >= 20  # the cars that drive through the lot
    widths = stored.xyxy[vehicles, 2] - stored.xyxy[vehicles, 0]
    assert 40 < float(np.median(widths)) < 250


def test_a_bad_camera_never_stops_the_others(tmp_path):
    config = config_for(tmp_path, [
        {"id": "missing", "url": str(tmp_path / "no-such-file.mp4")},
        {"id": "dead-rtsp", "url": f"rtsp://user:pw@127.0.0.1:{free_port()}/live", "reconnect_min_s": 0.2},
        {"id": "dog", "url": str(shared_file("media/dog-848x464.mp4"))},
    ])
    snap = PipelineRunner(config).run(duration_s=6)
    assert snap.streams["missing"]["state"] == "failed"
    assert snap.streams["dead-rtsp"]["reconnects"] >= 1
    assert snap.streams["dog"]["batched"] == 96
    assert "dog" in counts_by_stream_and_class(tmp_path / "out.db")


class ExplodingSink(BaseSink):
    name = "exploding"

    def __init__(self):
        self.calls = 0

    def on_frame(self, result):
        self.calls += 1
        raise RuntimeError("disk full")


@pytest.mark.fault
def test_a_failing_sink_is_counted_and_never_stops_detection(tmp_path):
    config = config_for(tmp_path, [{"id": "dog", "url": str(shared_file("media/dog-848x464.mp4"))}])
    exploding = ExplodingSink()
    snap = PipelineRunner(config, sinks=[exploding]).run()
    assert snap.frames_detected == 96 and exploding.calls == 96
    assert snap.sink_failures == {"exploding": 96}
    assert counts_by_stream_and_class(tmp_path / "out.db")["dog"]


def test_ctrl_c_to_the_process_group_stops_streams_in_decode_processes_as_a_stop_not_a_failure(tmp_path):
    """Ctrl-C in a terminal (and a service manager's stop) reaches every process of the group: the decode
    processes must leave the stop to the main process, which drains their streams."""
    clip = shared_file("media/car-detection.mp4")
    cfg = config_for(tmp_path, [{"id": "lot", "url": str(clip), "loop": True, "fps": 10}]).model_dump(mode="json")
    cfg["sinks"].append({"type": "jsonl", "path": str(tmp_path / "frames.jsonl")})
    cfg["runtime"].update(http={"port": 0}, decode_processes=1)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    frames_file = tmp_path / "frames.jsonl"
    assert wait_until(lambda: proc.poll() is not None or frames_file.exists()
                      and frames_file.read_text().count("\n") >= 10, timeout=60)
    assert proc.poll() is None, proc.communicate()[1]  # it runs, and has written frames
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "KeyboardInterrupt" not in err and "exited with code" not in err and "Ran " in out
    frames = int(out.split(" frames (")[0].rsplit(" ", 1)[1])
    assert frames >= 10 and len(frames_file.read_text().splitlines()) == frames


def test_sigint_stops_sources_drains_and_flushes_storage(tmp_path):
    clip = shared_file("media/car-detection.mp4")
    cfg = config_for(tmp_path, [{"id": "lot", "url": str(clip), "loop": True, "fps": 10}]).model_dump(mode="json")
    cfg["sinks"].append({"type": "jsonl", "path": str(tmp_path / "frames.jsonl")})
    cfg["runtime"]["http"] = {"port": 0}  # no duration: a service, its server on any free port
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "frames.jsonl"
    assert wait_until(lambda: proc.poll() is not None or jsonl.exists() and jsonl.read_text().count("\n") > 10,
                      timeout=120), "no frames written"
    assert proc.poll() is None, proc.communicate()[1]  # it runs, and has written frames
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGINT received" in err and "Ran " in out
    frames = int(out.split(" frames (")[0].rsplit(" ", 1)[1])
    lines = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert frames > 10 and len(lines) == frames  # every detected frame was flushed before exit
    in_jsonl = sum(len(json.loads(line)["detections"]) for line in lines)
    assert len(detections_for_stream(tmp_path / "out.db", "lot").seq) == in_jsonl  # SQLite flushed too
