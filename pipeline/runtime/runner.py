"""Runs a built pipeline (`build.build_pipeline`): starts its stages, adds and removes streams while it
runs, and stops it the same way every time.

Threads: one decode worker per stream (in child processes when the plan says so), `detector.workers`
inference threads (results handed on in batch order), `runtime.stage_workers` stage threads, one thread
per frame sink, one storing events into the outbox and one delivery thread per event output.
Stopping (duration reached, SIGINT/SIGTERM, every file finished) always goes the same way: sources
stop, the buffer drains through the detector and the stages, the sinks flush, the outbox keeps the rest.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Callable

from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import Plan, plan_stream, resolve
from pipeline.detect.detector import Detector
from pipeline.errors import NoSuchStream, PipelineError, StreamExists
from pipeline.runtime.build import build_pipeline
from pipeline.runtime.snapshot import Snapshot, take_snapshot
from pipeline.sinks.base import Sink

log = logging.getLogger(__name__)


class PipelineRunner:
    """Runs one PipelineConfig. `run()` blocks until done; `request_stop()` may be called from any thread,
    `add_stream` and `remove_stream` too, while it runs.

    detector: one already loaded (else made from the config). sinks: frame sinks beyond the configured
    ones. plan: how to run (else `resolve(config)` for this machine).
    """

    def __init__(self, config: PipelineConfig, detector: Detector | None = None, *, sinks: list[Sink] = (),
                 plan: Plan | None = None):
        self.config = config
        self.plan = plan or resolve(config)
        for warning in self.plan.warnings:
            log.warning("%s", warning)
        self._admin = threading.Lock()  # one add or remove at a time (never taken by the pipeline's threads)
        self._lock = threading.Lock()  # the bookkeeping below, held briefly
        self._streams: dict[str, StreamConfig] = {}
        self._removing: dict[str, threading.Event] = {}
        self._done: set[str] = set()  # streams whose end every sink has handled
        self._finished: queue.SimpleQueue = queue.SimpleQueue()  # such streams, from the sink threads
        self._accepting = False
        self._until_stopped = False
        self._stop = threading.Event()
        self.parts = build_pipeline(config, self.plan, detector=detector, sinks=sinks,
                                    on_finished=self._finished.put, finish_when=self._stop.is_set)
        self.detector = self.parts.detector
        self._abandon = threading.Event()
        self._started = 0.0
        self._finished_at: float | None = None
        self._snapshot_lock = threading.Lock()
        self.running = threading.Event()  # set once the engine is warm and the configured streams started

    # -- streams while running -----------------------------------------------------------------
    def add_stream(self, config: StreamConfig) -> None:
        """Start one more stream; the others are not paused or reset. ConfigError when its id is taken,
        its lane unknown or a stage cannot be made for it; PipelineError while the pipeline is not
        running. Nothing is left behind when it fails."""
        with self._admin:
            if not self._accepting:
                raise PipelineError(f"stream '{config.id}' not added: the pipeline is not running")
            with self._lock:
                if config.id in self._streams:
                    raise StreamExists(f"stream '{config.id}' already exists; remove it first or choose another id")
            plan = plan_stream(config, self.plan)
            self.parts.buffer.add_stream(config)
            try:
                self.parts.stages.add_stream(config.id, config.url, plan.live)
            except BaseException:
                self.parts.buffer.discard_stream(config.id)
                raise
            with self._lock:
                self._streams[config.id] = config
                self._done.discard(config.id)
            self.parts.sources.add(config, plan)  # from here on its end comes through the buffer

    def remove_stream(self, stream_id: str, timeout: float = 10.0) -> bool:
        """Stop one stream and forget it everywhere once its last frame has been through the stages and
        sinks; the others go on. True when that finished within `timeout` s (else it finishes later)."""
        with self._admin:
            with self._lock:
                if stream_id not in self._streams:
                    raise NoSuchStream(f"no stream '{stream_id}'; streams: {sorted(self._streams)}")
                done = self._removing.setdefault(stream_id, threading.Event())
                ended = stream_id in self._done
            self.parts.buffer.remove_stream(stream_id)
            self.parts.sources.stop(stream_id)
            if ended:  # it had ended before: nothing more will come through
                self._forget(stream_id)
        return done.wait(timeout)

    def streams(self) -> list[StreamConfig]:
        with self._lock:
            return list(self._streams.values())

    def _handle_finished(self) -> None:
        """Streams whose end every sink has handled: drop their packets; forget the removed ones."""
        while True:
            try:
                stream_id = self._finished.get_nowait()
            except queue.Empty:
                return
            self.parts.sources.end_clips(stream_id)
            with self._lock:
                self._done.add(stream_id)
                removed = stream_id in self._removing
            if removed:
                self._forget(stream_id)

    def _forget(self, stream_id: str) -> None:
        self.parts.sources.forget(stream_id)
        with self._lock:
            self._streams.pop(stream_id, None)
            self._done.discard(stream_id)
            done = self._removing.pop(stream_id)
        done.set()

    def _all_ended(self) -> bool:
        """Every stream the run still has ended by itself (files finished, streams failed): a run of
        files is over. A run whose streams were all removed is not."""
        with self._lock:
            active = [sid for sid in self._streams if sid not in self._removing]
        return bool(active) and self.parts.buffer.finished

    # -- running -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: stop the sources and drain. Second call: also abandon frames still buffered."""
        if self._stop.is_set():
            self._abandon.set()
        self._stop.set()

    def run(self, duration_s: float | None = None, on_progress: Callable[[Snapshot], None] | None = None,
            progress_interval_s: float = 1.0, until_stopped: bool = False) -> Snapshot:
        """Run until stopped, until `duration_s` passed, or (unless `until_stopped`, a service) until every
        stream ended by itself; returns the final Snapshot."""
        self.detector.warm_up()
        self._started = time.monotonic()
        self._until_stopped = until_stopped
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.plan.switch_interval_s)
        try:
            return self._run(duration_s, on_progress, progress_interval_s)
        finally:
            sys.setswitchinterval(previous_interval)

    def _run(self, duration_s, on_progress, progress_interval_s) -> Snapshot:
        parts = self.parts
        try:
            parts.outputs.open()
            parts.events.start()
            parts.stages.start()
            self._accepting = True
            for stream in self.config.streams:
                self.add_stream(stream)
            parts.inference.start()
            self.running.set()
            self._wait(duration_s, on_progress, progress_interval_s)
        except BaseException:
            self._abandon.set()  # an error in the runner itself: stop detecting, flush what was done
            raise
        finally:
            self._shut_down()
        snap = self.snapshot()
        snap.extra["shutdown_s"] = round(time.monotonic() - self._finished_at, 2)
        return snap

    def _wait(self, duration_s, on_progress, progress_interval_s) -> None:
        """Until inference has taken every frame after a stop (or was abandoned); stops the sources when
        asked, when the duration is reached, or when every stream has ended by itself."""
        inference = self.parts.inference
        next_progress = self._started + progress_interval_s
        while not inference.join(0.1):
            self._handle_finished()
            now = time.monotonic()
            if not self._stop.is_set():
                if duration_s is not None and now - self._started >= duration_s:
                    log.info("duration of %.1f s reached; stopping sources and draining", duration_s)
                    self._stop.set()
                elif not self._until_stopped and self._all_ended():
                    self._stop.set()
            if self._stop.is_set():
                self._accepting = False
                with self._admin:  # an add in progress finishes first, so its stream is stopped too
                    self.parts.sources.stop_all()
            if self._abandon.is_set():
                inference.abandon()
            if on_progress is not None and now >= next_progress:
                on_progress(self.snapshot())
                next_progress = now + progress_interval_s

    def _shut_down(self) -> None:
        """Stop and drain everything, also after an error: sources, stages, sinks, outbox, detector."""
        parts = self.parts
        self._accepting = False
        self.running.clear()
        self._finished_at = time.monotonic()
        with self._admin:
            parts.sources.stop_all()
        parts.sources.join_all(5.0)
        if self._abandon.is_set() or not parts.inference.join(5.0):
            parts.inference.abandon()
        if not parts.stages.close(timeout=5.0 if self._abandon.is_set() else 60.0):
            log.warning("stage workers did not drain in time (a sink may be hung); closing the sinks anyway")
            parts.outputs.close()  # a worker waiting for room in a sink's queue goes on
            parts.stages.close(timeout=5.0)
        parts.outputs.finish(timeout=5.0 if self._abandon.is_set() else 30.0)
        self._handle_finished()
        parts.events.close()
        parts.sources.close()
        parts.detector.close()

    def snapshot(self) -> Snapshot:
        with self._snapshot_lock:  # the live view and the metrics server may ask at once
            return take_snapshot(self.parts, (self._finished_at or time.monotonic()) - self._started)
