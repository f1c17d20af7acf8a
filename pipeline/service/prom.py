"""What an operator scrapes: the pipeline's Snapshot as Prometheus metrics (`prometheus_client`).

Label values are stream ids, lane, sink and output names, never URLs, so no credential can leak into a
scrape. The numbers are the live view's: one Snapshot per scrape. docs/METRICS.md lists every metric.
"""
from __future__ import annotations

import platform
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from pipeline.runtime.snapshot import Snapshot

PREFIX = "streamweave"

STREAM_COUNTERS = {  # stats key -> (metric, help)
    "decoded": ("stream_frames_decoded", "frames decoded"),
    "frames": ("stream_frames_buffered", "frames handed to the aligned buffer"),
    "skipped_late": ("stream_frames_skipped_late", "frames a live source skipped because it fell behind"),
    "paced_late": ("stream_frames_paced_late", "frames of a paced file decoded later than their moment (decoding "
                   "does not keep up with the file's rate)"),
    "dropped_sink": ("stream_frames_refused", "live frames the buffer refused"),
    "batched": ("stream_frames_detected", "frames that went through the detector"),
    "staged": ("stream_frames_staged", "frames through the stream's stages (tracker, analytics, plugins)"),
    "dropped_overflow": ("stream_frames_dropped_overflow", "frames dropped because the stream's ring was full"),
    "dropped_age": ("stream_frames_dropped_age", "frames dropped as older than the lane's max_age_ms"),
    "dropped_fps_cap": ("stream_frames_skipped_fps_cap", "frames skipped by the stream's fps cap"),
    "replayed": ("stream_frames_replayed", "frames an HLS camera's reconnect read again (a playlist that stopped "
                 "growing), skipped"),
    "dropped_copy": ("stream_frames_lost_copy", "frames decoded in a decode process and lost copying them into the "
                     "main process"),
    "reconnects": ("stream_reconnects", "reconnects of a live stream"),
    "corrupt_packets": ("stream_corrupt_packets", "packets skipped as undecodable or decoded into a damaged frame"),
}


OUTBOX = {  # per event output: key -> (metric kind, help)
    "pending": ("gauge", "events stored in the outbox and not yet delivered to the output"),
    "delivered": ("counter", "events delivered to the output"),
    "failed": ("counter", "delivery attempts that failed (retried)"),
    "dead": ("counter", "events given up on: refused for good or out of retries (kept as dead letters)"),
}


class SnapshotCollector:
    """A `prometheus_client` collector over `snapshot()`; `version`: the package's, for the build info."""

    def __init__(self, snapshot: Callable[[], Snapshot], version: str):
        self._snapshot = snapshot
        self._version = version

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        build = InfoMetricFamily(f"{PREFIX}_build", "the version, detector engine and Python of this process, the "
                                 "instance's name (Prometheus's `instance` is the scraped address) and its static "
                                 "shard (empty: none)")
        build.add_metric([], {"version": self._version, "engine": snap.engine, "python": platform.python_version(),
                              "instance_name": snap.extra.get("instance", ""), "shard": snap.extra.get("shard", "")})
        yield build
        yield from _totals(snap)
        yield from _streams(snap)
        yield from _lanes(snap)
        yield from _sinks(snap)
        yield from _outbox(snap)


def _counter(name: str, help_: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", help_, labels=labels)


def _gauge(name: str, help_: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_, labels=labels)


def _totals(snap: Snapshot) -> Iterator[Metric]:
    for name, help_, value in (("frames_detected", "frames through the detector", snap.frames_detected),
                               ("batches", "batches through the detector", snap.batches),
                               ("detections", "detections after NMS", snap.detections),
                               ("events", "events published to the outbox", snap.events),
                               ("inference_seconds", "time spent in the detector", snap.infer_s),
                               ("failed_batches", "batches the detector failed on (skipped)",
                                snap.extra.get("failed_batches", 0))):
        metric = _counter(name, help_)
        metric.add_metric([], value)
        yield metric


def _streams(snap: Snapshot) -> Iterator[Metric]:
    for key, (name, help_) in STREAM_COUNTERS.items():
        metric = _counter(name, help_, ["stream"])
        for sid, stats in snap.streams.items():
            metric.add_metric([sid], stats.get(key, 0))
        yield metric
    for name, help_, value in (("stream_queue_depth", "frames waiting in the stream's ring", lambda s: s.get("depth", 0)),
                               ("stream_up", "1 while the stream delivers frames", lambda s: int(s.get("state") == "running")),
                               ("stream_fps", "frames decoded per second over the last second (0 unless up)",
                                lambda s: s.get("decode_fps", 0) if s.get("state") == "running" else 0)):
        metric = _gauge(name, help_, ["stream"])
        for sid, stats in snap.streams.items():
            metric.add_metric([sid], value(stats))
        yield metric


def _lanes(snap: Snapshot) -> Iterator[Metric]:
    batches = _counter("lane_batches", "batches formed by the lane", ["lane"])
    mean = _gauge("lane_mean_batch_size", "mean frames per batch of the lane", ["lane"])
    depth = _gauge("lane_queue_depth", "frames waiting in the rings of the lane's streams", ["lane"])
    for name, lane in snap.lanes.items():
        batches.add_metric([name], lane.get("batches", 0))
        mean.add_metric([name], lane.get("mean_batch_size", 0.0))
        depth.add_metric([name], lane.get("depth", 0))
    yield from (batches, mean, depth)


def _sinks(snap: Snapshot) -> Iterator[Metric]:
    stage_depth = _gauge("stage_queue_depth", "frames waiting for a stage worker", ["worker"])
    for i, depth in enumerate(snap.stage_depths):
        stage_depth.add_metric([str(i)], depth)
    sink_depth = _gauge("sink_queue_depth", "results waiting for a frame sink", ["sink"])
    backlog = _gauge("sink_writer_backlog", "frames a sink's own writer has yet to write (storage: rows waiting "
                     "for the database)", ["sink"])
    dropped = _counter("sink_frames_dropped", "live frames a sink dropped to keep up (overflow: drop_oldest)",
                       ["sink", "stream"])
    for name, stats in snap.sinks.items():
        sink_depth.add_metric([name], stats.get("queued", 0))
        if "backlog" in stats:
            backlog.add_metric([name], stats["backlog"])
        for sid, n in stats.get("dropped", {}).items():
            dropped.add_metric([name, sid], n)
    failures = _counter("sink_failures", "frames a stage or sink failed on (isolated, detection went on)", ["sink"])
    for name, n in snap.sink_failures.items():
        failures.add_metric([name], n)
    yield from (stage_depth, sink_depth, backlog, dropped, failures)


def _outbox(snap: Snapshot) -> Iterator[Metric]:
    waiting = _gauge("events_waiting", "events published but not yet stored in the outbox")
    waiting.add_metric([], snap.extra.get("events", {}).get("waiting", 0))
    yield waiting
    outputs = snap.extra.get("outbox", {})
    for key, (kind, help_) in OUTBOX.items():
        metric = (_gauge if kind == "gauge" else _counter)(f"outbox_{key}", help_, ["output"])
        for name, stats in outputs.items():
            metric.add_metric([name], stats.get(key, 0))
        yield metric
