"""What an operator scrapes from a running service: /metrics over real HTTP, parsed as Prometheus parses it,
checked against the dashboard shipped in docs/ and against what the pipeline did."""
from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Service
from pipeline.testing import RecordingSink
from samples.local_services import free_port
from tests.conftest import REPO, shared_file

DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\b(?:streamweave|process)_[a-z0-9_]+")
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
"""The series names a family of each type has (a gauge's and an info's are the family's own name)."""


def scrape(client: httpx.Client) -> dict[str, list]:
    """Every series of /metrics by its name, with its samples (none yet for a family whose labels have no
    value yet: failures, sinks that dropped nothing)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for suffix in SERIES.get(family.type, ("",)):
            samples[family.name + suffix] = []
        for sample in family.samples:
            samples[sample.name].append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry `labels`."""
    assert name in samples, f"{name} is not served"
    return sum(s.value for s in samples[name] if labels.items() <= s.labels.items())


def dashboard_metrics() -> set[str]:
    """The series names the dashboard's queries and variables read."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return {name for query in queries for name in METRIC_NAME.findall(query)}


def test_every_series_the_dashboard_reads_is_served_and_agrees_with_what_the_pipeline_did(tmp_path, serve):  # noqa: F811
    sink = RecordingSink()
    served = serve(PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "lanes": [{"name": "default"}, {"name": "files", "priority": 1, "max_batch": 16}],
        "streams": [{"id": "cam", "url": "fake://cam?fps=40"},
                    {"id": "clip", "url": "fake://clip?live=0&frames=120", "lane": "files"}],
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")}}), sinks=[sink])
    assert sink.wait_for(lambda s: "clip" in s.ended and len(s.seqs["cam"]) >= 20, timeout=30)

    running = scrape(served.client)
    read = dashboard_metrics()
    gpu = {name for name in read if name.startswith("streamweave_gpu_")}
    assert gpu and len(read) > 25
    missing = read - running.keys()
    assert missing == (set() if gpu & running.keys() else gpu), missing  # GPU series only where NVML sees a GPU
    assert value(running, "streamweave_stream_fps", stream="cam") > 0
    assert value(running, "streamweave_stream_up", stream="cam") == 1
    assert value(running, "process_resident_memory_bytes") > 0 and value(running, "process_cpu_seconds_total") > 0
    build = running["streamweave_build_info"][0].labels
    assert build["engine"] == "fake" and build["version"] == served.client.get("/openapi.json").json()["info"]["version"]

    # Once the paused camera's end has reached the sink, nothing moves: every count is final.
    assert served.client.post("/api/streams/cam/pause").status_code == 200
    assert sink.wait_for(lambda s: "cam" in s.ended, timeout=20)
    final = scrape(served.client)
    dropped_by_sink = value(final, "streamweave_sink_frames_dropped_total", stream="cam")
    frames = {"default": len(sink.seqs["cam"]) + dropped_by_sink, "files": len(sink.seqs["clip"])}
    assert frames["files"] == 120 and frames["default"] >= 20
    for lane, n in frames.items():
        assert value(final, "streamweave_capture_to_detection_seconds_count", lane=lane) == n
        assert value(final, "streamweave_frame_age_at_batch_seconds_count", lane=lane) == n
        assert value(final, "streamweave_batch_size_frames_sum", lane=lane) == n
        batches = value(final, "streamweave_lane_batches_total", lane=lane)
        assert value(final, "streamweave_batch_size_frames_count", lane=lane) == batches
        assert value(final, "streamweave_engine_batch_seconds_count", lane=lane) == batches
        # each frame's detections come after its batch left the buffer, which came after its capture
        latency = value(final, "streamweave_capture_to_detection_seconds_sum", lane=lane)
        assert latency > value(final, "streamweave_frame_age_at_batch_seconds_sum", lane=lane) > 0
        assert value(final, "streamweave_lane_queue_depth", lane=lane) == 0
    detected = value(final, "streamweave_frames_detected_total")
    assert value(final, "streamweave_batch_size_frames_sum") == detected == sum(frames.values())
    assert value(final, "streamweave_batch_size_frames_count") == value(final, "streamweave_batches_total")
    assert value(final, "streamweave_engine_batch_seconds_sum") == pytest.approx(
        value(final, "streamweave_inference_seconds_total"))
    assert value(final, "streamweave_stage_queue_depth") == 0
    assert value(final, "streamweave_sink_queue_depth", sink="recording") == 0


def test_a_real_model_is_counted_while_running_and_no_credential_reaches_a_scrape(tmp_path):
    port = free_port()
    config = PipelineConfig.model_validate({
        "plugins": ["samples.world.source"],
        "streams": [{"id": "lot", "url": "synthetic://plaza?seed=1&fps=10&size=320x176"},  # paced like a camera
                    {"id": "rtsp-cam", "url": f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/live"}],
        "detector": {"model": str(shared_file("models/yolox_nano_416_dynbatch.onnx"))},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "out.db")}],
        "runtime": {"metrics_port": port, "outbox_path": str(tmp_path / "outbox.db")},
    })
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    service = Service(runner, config.runtime.http)  # metrics_port: the old key, still read
    thread = threading.Thread(target=service.run)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        assert sink.wait_for(lambda s: len(s.seqs["lot"]) >= 5, timeout=30)
        first = scrape(client)
        seen = len(sink.seqs["lot"])
        assert sink.wait_for(lambda s: len(s.seqs["lot"]) >= seen + 5, timeout=30)
        second = scrape(client)
        deadline = time.monotonic() + 30
        while value(second, "streamweave_stream_reconnects_total", stream="rtsp-cam") < 1 and time.monotonic() < deadline:
            seen = len(sink.seqs["lot"])  # paced by the frames of the camera that works
            assert sink.wait_for(lambda s: len(s.seqs["lot"]) > seen, timeout=30)
            second = scrape(client)
        text = client.get("/metrics").text
        status = client.get("/status").json()
    finally:
        service.request_stop()
        thread.join(60)
        client.close()
    assert value(second, "streamweave_frames_detected_total") > value(first, "streamweave_frames_detected_total") > 0
    decoded = value(second, "streamweave_stream_frames_decoded_total", stream="lot")
    assert decoded >= value(second, "streamweave_stream_frames_buffered_total", stream="lot") > 0
    assert value(second, "streamweave_stream_up", stream="lot") == 1, status["streams"]["lot"]
    assert value(second, "streamweave_stream_up", stream="rtsp-cam") == 0
    assert value(second, "streamweave_stream_reconnects_total", stream="rtsp-cam") >= 1
    assert value(second, "streamweave_sink_writer_backlog") >= 0 and len(second["streamweave_sink_writer_backlog"]) == 1
    assert value(second, "streamweave_capture_to_detection_seconds_count", lane="default") > 0
    assert "# TYPE streamweave_stream_frames_dropped_age_total counter" in text
    assert "s3cret" not in text and "s3cret" not in json.dumps(status)
    assert status["streams"]["lot"]["batched"] > 0 and status["engine"] == "onnxruntime"
