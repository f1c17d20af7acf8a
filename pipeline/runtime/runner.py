"""Wires the stages together and runs them: sources -> aligned buffer -> detector -> sinks.

Threads: one decode worker per stream (in child processes when `runtime.decode_processes` says so,
see `pipeline.sources.processes`), `detector.workers` inference threads (their results are
handed on in batch order, so each stream's frames reach the sinks in order), `runtime.sink_workers` sink threads,
one writer thread per storage and one delivery thread per event output (inside the sinks).
Stopping (duration reached, SIGINT/SIGTERM, every file finished) always goes the same way:
sources stop, the buffer drains through the detector, the sinks flush, the outbox keeps the rest.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

import numpy as np

from pipeline.align.buffer import AlignedBuffer
from pipeline.config.models import PipelineConfig
from pipeline.detect.detector import Detector
from pipeline.runtime.metrics import MetricsServer
from pipeline.runtime.sink_router import SinkRouter
from pipeline.runtime.snapshot import Snapshot
from pipeline.sinks.factory import build_outputs, build_stage_factory
from pipeline.sources.processes import make_processes, plan
from pipeline.sources.worker import StreamWorker
from pipeline.types import FrameResult

log = logging.getLogger(__name__)


class PipelineRunner:
    """Runs one PipelineConfig. `run()` blocks until done; `request_stop()` may be called from any thread."""

    def __init__(self, config: PipelineConfig, detector: Detector | None = None):
        self.config = config
        self._stop = threading.Event()
        self._abandon = threading.Event()
        largest_lane = max(lane.max_batch for lane in config.lanes)
        self.detector = detector or Detector(config.detector, max_batch=config.detector.max_batch or largest_lane)
        self.outputs = build_outputs(config, self.detector.class_names)
        self.buffer = AlignedBuffer(list(config.lanes), list(config.streams))
        self.router = SinkRouter(
            self.outputs.sinks,
            build_stage_factory(config, self.detector.class_names),
            self.outputs.publish_events,
            workers=config.runtime.sink_workers,
            queue_size=config.runtime.sink_queue_size,
        )
        count, remote = plan(config, self.outputs.packet_tap)
        self.decode_processes = make_processes(remote, count, self.buffer)
        in_children = {w.config.id: w for w in self.decode_processes.workers} if self.decode_processes else {}
        self.workers = [in_children.get(s.id) or StreamWorker(s, self.buffer, packet_tap=self.outputs.packet_tap)
                        for s in config.streams]
        self._take_lock = threading.Lock()
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._failed_batches = 0
        self._batches = 0
        self._frames = 0
        self._detections = 0
        self._infer_s = 0.0
        self._last_pts: dict[str, int] = {}
        self._started = 0.0
        self._finished_at: float | None = None
        self._snapshot_lock = threading.Lock()
        self.metrics_port: int | None = None

    def request_stop(self) -> None:
        """First call: stop the sources and drain. Second call: also abandon frames still buffered."""
        if self._stop.is_set():
            self._abandon.set()
        self._stop.set()

    def run(self, duration_s: float | None = None, on_progress: Callable[[Snapshot], None] | None = None,
            progress_interval_s: float = 1.0) -> Snapshot:
        self.detector.warm_up()
        self._started = time.monotonic()
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(self._switch_interval_s())
        try:
            return self._run(duration_s, on_progress, progress_interval_s)
        finally:
            sys.setswitchinterval(previous_interval)

    def _switch_interval_s(self) -> float:
        configured = self.config.runtime.switch_interval_ms
        if configured is not None:
            return configured / 1000
        return 0.0005 if self.detector.engine_name in ("tensorrt", "torch", "onnxruntime-cuda") else sys.getswitchinterval()

    def _run(self, duration_s, on_progress, progress_interval_s) -> Snapshot:
        metrics = None
        if self.config.runtime.metrics_port is not None:
            metrics = MetricsServer(self.snapshot, self.config.runtime.metrics_host, self.config.runtime.metrics_port)
            self.metrics_port = metrics.start().port
        try:
            return self._run_stages(duration_s, on_progress, progress_interval_s)
        finally:
            if metrics is not None:
                metrics.stop()

    def _run_stages(self, duration_s, on_progress, progress_interval_s) -> Snapshot:
        self.outputs.open()
        try:
            self.router.start()
            for worker in self.workers:
                worker.start()
            self._detect_until_done(duration_s, on_progress, progress_interval_s)
        except BaseException:
            self._abandon.set()  # an error in the runner itself: stop detecting, flush what was done
            raise
        finally:
            self._shut_down()
        snap = self.snapshot()
        snap.extra["shutdown_s"] = round(time.monotonic() - self._finished_at, 2)
        return snap

    def _detect_until_done(self, duration_s, on_progress, progress_interval_s) -> None:
        infer = [threading.Thread(target=self._infer_loop, name=f"infer:{i}", daemon=True)
                 for i in range(self.detector.workers)]
        for thread in infer:
            thread.start()
        next_progress = self._started + progress_interval_s
        while any(thread.is_alive() for thread in infer):
            next(t for t in infer if t.is_alive()).join(0.1)
            now = time.monotonic()
            if duration_s is not None and now - self._started >= duration_s and not self._stop.is_set():
                log.info("duration of %.1f s reached; stopping sources and draining", duration_s)
                self._stop.set()
            if self._stop.is_set():
                for worker in self.workers:
                    worker.stop()
            if on_progress is not None and now >= next_progress:
                on_progress(self.snapshot())
                next_progress = now + progress_interval_s

    def _shut_down(self) -> None:
        """Stop and drain everything, also after an error: sources, sinks, outputs, detector."""
        self._finished_at = time.monotonic()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            if not worker.join(5.0):
                log.warning("decode worker %s did not stop within 5 s", worker.config.id)
        if self.decode_processes is not None:
            self.decode_processes.close()
        try:
            for stream_id, pts in self._last_pts.items():
                self.router.end_stream(stream_id, pts)
        finally:
            if not self.router.close(timeout=60.0):
                log.warning("sink workers did not drain within 60 s")
            self.outputs.close()
            self.detector.close()

    def _infer_loop(self) -> None:
        while not self._abandon.is_set():
            with self._take_lock:
                batch = self.buffer.next_batch(timeout=0.05)
                if batch is None:
                    if self.buffer.finished:
                        return
                    continue
                ticket = self._next_ticket
                self._next_ticket += 1
            t0 = time.perf_counter()
            detections = None
            try:
                detections = self.detector(batch)
            except Exception:  # noqa: BLE001 - isolation boundary: one bad batch must not stop detection
                log.exception("batch of %d frames from lane '%s' failed in the detector; skipped", len(batch), batch.lane)
            finally:
                self._hand_on(ticket, batch, detections, time.perf_counter() - t0)

    def _hand_on(self, ticket: int, batch, detections, infer_s: float) -> None:
        """Submit a batch's results once every earlier batch has been submitted (keeps frame order)."""
        with self._turn:
            while self._serving != ticket and not self._abandon.is_set():
                self._turn.wait(0.1)
            self._infer_s += infer_s
            try:
                if detections is None:
                    self._failed_batches += 1
                    return
                self._batches += 1
                self._frames += len(batch)
                self._detections += len(detections)
                by_row = detections[np.argsort(detections.frame_idx, kind="stable")]
                bounds = np.searchsorted(by_row.frame_idx, np.arange(len(batch) + 1))
                for row, frame in enumerate(batch.frames):
                    self._last_pts[frame.stream_id] = frame.pts_ns
                    self.router.submit(FrameResult(frame, by_row[bounds[row] : bounds[row + 1]]))
            finally:
                self._serving += 1
                self._turn.notify_all()

    def snapshot(self) -> Snapshot:
        with self._snapshot_lock:  # the live view and the metrics server may ask at once
            return self._snapshot_now()

    def _snapshot_now(self) -> Snapshot:
        stats = self.buffer.stats()
        streams = {w.config.id: {**w.stats(), **stats["streams"].get(w.config.id, {})} for w in self.workers}
        return Snapshot(
            elapsed_s=(self._finished_at or time.monotonic()) - self._started,
            streams=streams,
            lanes=stats["lanes"],
            batches=self._batches,
            frames_detected=self._frames,
            detections=self._detections,
            events=self.router.events_published,
            sink_depths=self.router.depths(),
            sink_failures=dict(self.router.failures),
            engine=self.detector.engine_name,
            infer_s=self._infer_s,
            extra={"failed_batches": self._failed_batches, **self.outputs.stats()},
        )
