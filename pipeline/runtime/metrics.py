"""Live state over HTTP while the pipeline runs: Prometheus text on /metrics, JSON on /status.

    runtime: {metrics_port: 9108}       # curl http://127.0.0.1:9108/metrics

Counters come from the runner's Snapshot (the same numbers as the live view); label values are
stream ids, lane and sink names, never URLs, so no credential can leak into a scrape.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from pipeline.errors import ConfigError
from pipeline.runtime.snapshot import Snapshot

log = logging.getLogger(__name__)

_STREAM_COUNTERS = {  # stats key -> (metric, help)
    "decoded": ("stream_frames_decoded_total", "frames decoded"),
    "frames": ("stream_frames_buffered_total", "frames handed to the aligned buffer"),
    "skipped_late": ("stream_frames_skipped_late_total", "frames a live source skipped because it fell behind"),
    "dropped_sink": ("stream_frames_refused_total", "live frames the buffer refused"),
    "batched": ("stream_frames_detected_total", "frames that went through the detector"),
    "dropped_overflow": ("stream_frames_dropped_overflow_total", "frames dropped because the stream's ring was full"),
    "dropped_age": ("stream_frames_dropped_age_total", "frames dropped as older than the lane's max_age_ms"),
    "dropped_fps_cap": ("stream_frames_skipped_fps_cap_total", "frames skipped by the stream's fps cap"),
    "staged": ("stream_frames_staged_total", "frames through the stream's stages (tracker, analytics, plugins)"),
    "reconnects": ("stream_reconnects_total", "reconnects of a live stream"),
}


def prometheus_text(snap: Snapshot, prefix: str = "streamweave") -> str:
    """The snapshot in Prometheus' text exposition format (version 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {prefix}_{name} {help_}")
        out.append(f"# TYPE {prefix}_{name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{prefix}_{name}{{{text}}} {value}" if text else f"{prefix}_{name} {value}")

    metric("frames_detected_total", "counter", "frames through the detector", [({}, snap.frames_detected)])
    metric("batches_total", "counter", "batches through the detector", [({}, snap.batches)])
    metric("detections_total", "counter", "detections after NMS", [({}, snap.detections)])
    metric("events_total", "counter", "events published to the outbox", [({}, snap.events)])
    metric("inference_seconds_total", "counter", "time spent in the detector", [({}, round(snap.infer_s, 6))])
    for key, (name, help_) in _STREAM_COUNTERS.items():
        metric(name, "counter", help_, [({"stream": sid}, s.get(key, 0)) for sid, s in snap.streams.items()])
    metric("stream_queue_depth", "gauge", "frames waiting in the stream's ring",
           [({"stream": sid}, s.get("depth", 0)) for sid, s in snap.streams.items()])
    metric("stream_up", "gauge", "1 while the stream delivers frames",
           [({"stream": sid}, int(s.get("state") == "running")) for sid, s in snap.streams.items()])
    metric("lane_batches_total", "counter", "batches formed by the lane",
           [({"lane": name}, lane.get("batches", 0)) for name, lane in snap.lanes.items()])
    metric("lane_mean_batch_size", "gauge", "mean frames per batch of the lane",
           [({"lane": name}, round(lane.get("mean_batch_size", 0.0), 3)) for name, lane in snap.lanes.items()])
    metric("stage_queue_depth", "gauge", "results waiting for a stage worker",
           [({"worker": str(i)}, depth) for i, depth in enumerate(snap.stage_depths)])
    metric("sink_queue_depth", "gauge", "results waiting for a frame sink",
           [({"sink": name}, s.get("queued", 0)) for name, s in snap.sinks.items()])
    metric("sink_frames_dropped_total", "counter", "live frames a sink dropped to keep up (overflow: drop_oldest)",
           [({"sink": name, "stream": sid}, n) for name, s in snap.sinks.items() for sid, n in s.get("dropped", {}).items()])
    metric("sink_failures_total", "counter", "frames a sink failed on (isolated, detection went on)",
           [({"sink": name}, n) for name, n in snap.sink_failures.items()])
    outbox = snap.extra.get("outbox", {})
    for key, kind in (("pending", "gauge"), ("delivered", "counter"), ("failed", "counter")):
        name = f"outbox_{key}" if kind == "gauge" else f"outbox_{key}_total"
        metric(name, kind, f"events {key} per event output", [({"output": o}, s.get(key, 0)) for o, s in outbox.items()])
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """Serves `snapshot()` on host:port until `stop()`; one daemon thread named `metrics:<port>`."""

    def __init__(self, snapshot: Callable[[], Snapshot], host: str = "127.0.0.1", port: int = 9108):
        self._snapshot = snapshot
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise ConfigError(f"runtime.metrics_port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                              "choose a free port or leave metrics_port unset") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"metrics:{self.port}", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (JSON on /status)", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self):
        snapshot = self._snapshot

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                if self.path == "/metrics":
                    body, kind = prometheus_text(snapshot()).encode(), "text/plain; version=0.0.4"
                elif self.path == "/status":
                    body, kind = json.dumps(asdict(snapshot()), default=str).encode(), "application/json"
                else:
                    self.send_error(404, "try /metrics or /status")
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler
