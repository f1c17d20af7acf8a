"""The collectors behind /metrics, on snapshots made by hand: what each number is called and labelled."""
from __future__ import annotations

import logging
import platform
import sys

from prometheus_client import CollectorRegistry

from pipeline.runtime.snapshot import Snapshot
from pipeline.service.gpu import GpuCollector
from pipeline.service.prom import SnapshotCollector


def snapshot(**changes) -> Snapshot:
    values = dict(
        elapsed_s=3.0, streams={"cam-1": {"decoded": 90, "depth": 2, "state": "running", "decode_fps": 29.5},
                                "cam-2": {"decoded": 40, "depth": 0, "state": "reconnecting", "decode_fps": 25.0}},
        lanes={"fast": {"batches": 12, "mean_batch_size": 7.5, "depth": 4}}, batches=12, frames_detected=90,
        detections=140, events=3, stage_depths=[1, 0],
        sinks={"sqlite:runs/a.db": {"queued": 5, "backlog": 17, "dropped": {"cam-1": 2}},
               "jsonl:runs/a.jsonl": {"queued": 0, "dropped": {}}},
        sink_failures={}, engine="onnxruntime", infer_s=0.8,
        extra={"failed_batches": 1, "events": {"waiting": 6},
               "outbox": {"webhook:alerts#ab12": {"delivered": 2, "failed": 4, "dead": 1, "pending": 9}}})
    return Snapshot(**{**values, **changes})


def scraped(snap: Snapshot, version: str = "1.2.3") -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snap, version))
    return registry


def test_queues_backlogs_and_the_outbox_are_labelled_by_name_and_a_stream_not_up_has_no_fps():
    metrics = scraped(snapshot())
    assert metrics.get_sample_value("streamweave_lane_queue_depth", {"lane": "fast"}) == 4
    assert metrics.get_sample_value("streamweave_stream_queue_depth", {"stream": "cam-1"}) == 2
    assert metrics.get_sample_value("streamweave_stream_fps", {"stream": "cam-1"}) == 29.5
    assert metrics.get_sample_value("streamweave_stream_fps", {"stream": "cam-2"}) == 0  # its last rate is stale
    assert metrics.get_sample_value("streamweave_stage_queue_depth", {"worker": "0"}) == 1
    assert metrics.get_sample_value("streamweave_sink_queue_depth", {"sink": "sqlite:runs/a.db"}) == 5
    assert metrics.get_sample_value("streamweave_sink_writer_backlog", {"sink": "sqlite:runs/a.db"}) == 17
    assert metrics.get_sample_value("streamweave_sink_writer_backlog", {"sink": "jsonl:runs/a.jsonl"}) is None
    assert metrics.get_sample_value("streamweave_events_waiting") == 6
    output = {"output": "webhook:alerts#ab12"}
    assert metrics.get_sample_value("streamweave_outbox_pending", output) == 9
    assert metrics.get_sample_value("streamweave_outbox_dead_total", output) == 1
    assert metrics.get_sample_value("streamweave_failed_batches_total") == 1


def test_build_info_names_the_version_engine_python_instance_and_shard():
    labels = {"version": "1.2.3", "engine": "onnxruntime", "python": platform.python_version(), "instance_name": "",
              "shard": ""}
    assert scraped(snapshot()).get_sample_value("streamweave_build_info", labels) == 1
    placed = snapshot(extra={"instance": "edge-1-gpu1", "shard": "3/4"})
    labels.update(instance_name="edge-1-gpu1", shard="3/4")
    assert scraped(placed).get_sample_value("streamweave_build_info", labels) == 1


def test_without_nvml_no_gpu_series_is_exported_and_it_is_said_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as where nvidia-ml-py is not installed
    collector = GpuCollector()
    with caplog.at_level(logging.DEBUG, logger="pipeline.service.gpu"):
        assert list(collector.collect()) == [] and list(collector.collect()) == []
    assert [r.getMessage() for r in caplog.records] == [
        "no GPU metrics: nvidia-ml-py is not installed (pip install 'streamweave[gpu]')"]
    collector.close()


def test_a_stalled_stream_is_not_up_and_its_corrupt_packets_are_counted():
    metrics = scraped(snapshot(streams={"cam-1": {"state": "stalled", "decode_fps": 12.0, "corrupt_packets": 3}}))
    assert metrics.get_sample_value("streamweave_stream_up", {"stream": "cam-1"}) == 0
    assert metrics.get_sample_value("streamweave_stream_fps", {"stream": "cam-1"}) == 0  # its last rate is stale
    assert metrics.get_sample_value("streamweave_stream_corrupt_packets_total", {"stream": "cam-1"}) == 3
