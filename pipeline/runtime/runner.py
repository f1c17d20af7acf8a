"""Runs a built pipeline (`build.build_pipeline`): starts its stages, adds and removes streams while it
runs, and stops it the same way every time.

Threads: one decode worker per stream (in child processes when the plan says so), `detector.workers`
inference threads (each stream's results handed on in order), `runtime.stage_workers` stage threads, one thread
per frame sink, one storing events into the outbox and one delivery thread per event output.
Stopping (duration reached, SIGINT/SIGTERM, every file finished) always goes the same way: sources
stop, the buffer drains through the detector and the stages, the sinks flush, the outbox keeps the rest.
A stage or sink that hangs holds a stop up for `drain_s` at most: a stage worker hung in one call that long is
left (logged, naming its stream and stage) and the other streams drain; a hung sink is closed anyway.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Callable

from pipeline.config.diff import ConfigDiff
from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import Plan, resolve
from pipeline.detect.detector import Detector
from pipeline.errors import PipelineError
from pipeline.runtime import reconfigure
from pipeline.runtime.build import build_pipeline
from pipeline.runtime.placement import Placement
from pipeline.runtime.snapshot import Snapshot, take_snapshot
from pipeline.runtime.streams import StreamTable
from pipeline.sinks.base import Sink

log = logging.getLogger(__name__)


class PipelineRunner:
    """Runs one PipelineConfig. `run()` blocks until done; `request_stop()` may be called from any thread,
    `add_stream` and `remove_stream` too, while it runs.

    detector: one already loaded (else made from the config). sinks: frame sinks beyond the configured
    ones. plan: how to run (else `resolve(config)` for this machine). placement: this instance's shard,
    port and outbox in a fleet, applied to this config and to every later one (`pipeline.runtime.placement`).
    fence: in a PostgreSQL-coordinated fleet, what its storage asks before writing a camera's rows
    (`pipeline.cluster.fencing`).
    """

    drain_s: float = 60.0
    """How long a stop waits for a stage hung in one call or a sink that takes no frames, and for the stage workers
    to drain; the sinks then get at most 30 s of it to write what they hold."""

    def __init__(self, config: PipelineConfig, detector: Detector | None = None, *, sinks: list[Sink] = (),
                 plan: Plan | None = None, placement: Placement = Placement(), fence=None):
        self.placement = placement
        config = placement.apply(config)
        self.plan = plan or resolve(config)
        for warning in self.plan.warnings:
            log.warning("%s", warning)
        self._until_stopped = False
        self._stop = threading.Event()
        finished: queue.SimpleQueue = queue.SimpleQueue()
        self.parts = build_pipeline(config, self.plan, detector=detector, sinks=sinks,
                                    on_finished=finished.put, finish_when=self._stop.is_set, fence=fence)
        self.table = StreamTable(self.parts, self.plan, finished)
        self.detector = self.parts.detector
        self._abandon = threading.Event()
        self._started = 0.0
        self._finished_at: float | None = None
        self._snapshot_lock = threading.Lock()
        self._config_lock = threading.Lock()  # `add_stream` and `remove_stream` edit the config's streams
        self.running = threading.Event()  # set once the engine is warm and the configured streams started

    @property
    def config(self) -> PipelineConfig:
        """The config it runs now (changed by `reconfigure`)."""
        return self.parts.config

    # -- changes while running -----------------------------------------------------------------
    def reconfigure(self, config: PipelineConfig) -> ConfigDiff:
        """Run `config` (as this runner's placement changes it: only its shard's streams) from now on, changing
        only what differs (see `pipeline.runtime.reconfigure`); refused (PipelineError) unless the pipeline runs:
        while it starts its configured streams, any of them would look added."""
        if self.table.accepting and not self.running.is_set():
            raise PipelineError("the pipeline is still starting its cameras; the change was not applied (try again "
                                "once it runs: /readyz)")
        with self._config_lock:
            return reconfigure.apply(self.parts, self.table, self.placement.apply(config))

    def check(self, config: PipelineConfig) -> ConfigDiff:
        """What `reconfigure(config)` would change, changing nothing; its errors as `reconfigure` would raise."""
        return reconfigure.check(self.parts, self.table, self.placement.apply(config))

    def add_stream(self, config: StreamConfig) -> None:
        """Start one more stream; the others are not paused or reset (see `StreamTable.add`). OtherShard for a
        stream of another shard. The config it runs (`config`) lists it from now on, so a change made later to
        that config (the control API's, without a file) keeps it."""
        self._start_stream(config)
        self._edit_streams(lambda streams: [*streams, config])

    def remove_stream(self, stream_id: str, timeout: float = 10.0) -> bool:
        """Stop one stream and forget it once its last frame went through (see `StreamTable.remove`); the config
        it runs no longer lists it."""
        done = self.table.remove(stream_id, timeout)
        self._edit_streams(lambda streams: [s for s in streams if s.id != stream_id])
        return done

    def _start_stream(self, config: StreamConfig) -> None:
        if self.placement.shard is not None:
            self.placement.shard.check(config.id)
        self.table.add(config)

    def _edit_streams(self, edit: Callable[[list[StreamConfig]], list[StreamConfig]]) -> None:
        with self._config_lock:
            self.parts.config = self.parts.config.model_copy(update={"streams": edit(self.parts.config.streams)})

    def streams(self) -> list[StreamConfig]:
        """Every stream, running or paused."""
        return self.table.configs()

    def detector_batches(self) -> tuple[int, int]:
        """(batches the detector failed on, batches it detected) so far."""
        return self.parts.inference.failed_batches, self.parts.inference.batches

    def detector_failing(self) -> bool:
        """A batch failed lately and none went through since (`pipeline.runtime.inference.DetectorFailures`)."""
        return self.parts.inference.failures.failing()

    # -- running -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: stop the sources and drain. Second call: also abandon frames still buffered, and give a sink
        still closing (its database down) a few seconds more, not the rest of the drain."""
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
        log.info("run %s: config %s, streamweave %s", parts.run.run_id, parts.run.config_hash, parts.run.version)
        try:
            parts.outputs.open()
            parts.events.start()
            parts.stages.start()
            self.table.accepting = True
            for stream in self.config.streams:
                self._start_stream(stream)
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
        stopped_at = None
        while not inference.join(0.1):
            self.table.handle_finished()
            now = time.monotonic()
            if not self._stop.is_set():
                if duration_s is not None and now - self._started >= duration_s:
                    log.info("duration of %.1f s reached; stopping sources and draining", duration_s)
                    self._stop.set()
                elif not self._until_stopped and self.table.all_ended():
                    self._stop.set()
            if self._stop.is_set():
                self.table.stop_all()
                stopped_at = now if stopped_at is None else stopped_at
                if now - stopped_at >= self.drain_s:  # inference may be waiting for a stage worker that hangs
                    self.parts.stages.give_up_hung(self.drain_s)
            if self._abandon.is_set():
                inference.abandon()
                self.parts.stages.abandon()  # inference may be waiting for a stage worker that hangs
            if on_progress is not None and now >= next_progress:
                on_progress(self.snapshot())
                next_progress = now + progress_interval_s

    def _shut_down(self) -> None:
        """Stop and drain everything, also after an error: sources, stages, sinks, outbox, detector."""
        parts = self.parts
        self.running.clear()
        self._finished_at = time.monotonic()
        self.table.stop_all()
        parts.sources.join_all(5.0)
        if self._abandon.is_set() or not parts.inference.join(5.0):
            parts.inference.abandon()
            parts.stages.abandon()
        if not parts.stages.close(timeout=5.0 if self._abandon.is_set() else self.drain_s):
            log.warning("stage workers did not drain in time (a sink may be hung); closing the sinks anyway")
            parts.outputs.close()  # a worker waiting for room in a sink's queue goes on
            parts.stages.close(timeout=5.0)
        parts.outputs.finish(timeout=5.0 if self._abandon.is_set() else min(30.0, self.drain_s), abandon=self._abandon)
        self.table.handle_finished()
        parts.events.close()
        parts.sources.close()
        parts.detector.close()

    def snapshot(self) -> Snapshot:
        with self._snapshot_lock:  # the live view and the metrics server may ask at once
            snap = take_snapshot(self.parts, (self._finished_at or time.monotonic()) - self._started)
        if self.placement.shard is not None:
            snap.extra["shard"] = str(self.placement.shard)
        return snap
