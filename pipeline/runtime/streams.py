"""`StreamTable`: the streams of a running pipeline, added, changed, paused, resumed and removed one at a
time while the others go on (no pause, no drop, no reset of theirs).

Changes are serialised and never wait on the pipeline's own threads: when a stream has ended
everywhere (every sink has handled its end), a sink thread only queues its id, and the runner's loop
calls `handle_finished`, which drops its packets and, for a removed stream, forgets it. A change that waits
for a stream to stop (`replace`, `add` of an id still leaving) waits outside the lock, so a stop is never held
up by it; a stream being replaced refuses other changes meanwhile, except a removal, which wins.
"""
from __future__ import annotations

import queue
import threading

from pipeline.config.models import StreamConfig
from pipeline.config.resolve import Plan, plan_stream
from pipeline.errors import ConfigError, NoSuchStream, PipelineError, StreamExists
from pipeline.runtime.build import Pipeline
from pipeline.runtime.memory import release_free_memory

class StreamTable:
    """parts, plan: the built pipeline and its plan. finished: where the sink threads put the ids of
    streams whose end they have all handled (`build_pipeline(on_finished=finished.put)`)."""

    def __init__(self, parts: Pipeline, plan: Plan, finished: queue.SimpleQueue):
        self._parts, self._plan = parts, plan
        self._admin = threading.Lock()  # one change at a time (never taken by the pipeline's threads)
        self._lock = threading.Lock()  # the tables below, held briefly
        self._streams: dict[str, StreamConfig] = {}
        self._paused: dict[str, StreamConfig] = {}
        self._removing: dict[str, threading.Event] = {}
        self._replacing: dict[str, StreamConfig] = {}  # streams `replace` stopped and will start anew
        self._done: set[str] = set()  # streams whose end every sink has handled
        self._nvdec: set[str] = set()  # the streams decoded by NVDEC (`auto` puts them in children once there are 8)
        self._finished = finished
        self.accepting = False

    def add(self, config: StreamConfig, timeout: float = 10.0) -> None:
        """Start one more stream. ConfigError when its id is taken, its lane unknown or a stage cannot be made
        for it; PipelineError while the pipeline is not running, or when its reader cannot be started (its end
        then goes through the stages and sinks, as a removed stream's, and the id is free once it has). A stream
        of that id still being removed is waited for, up to `timeout` s (PipelineError after that)."""
        with self._lock:
            leaving = self._removing.get(config.id)
        if leaving is not None:  # waited for without the admin lock: a stop must not wait behind it
            leaving.wait(timeout)
        with self._admin:
            with self._lock:
                if config.id in self._paused:
                    raise StreamExists(f"stream '{config.id}' exists and is paused; resume it or remove it first")
                if config.id in self._removing:
                    raise PipelineError(f"stream '{config.id}' is still stopping (its last frames are going through "
                                        "the sinks); add it again in a moment")
            self._add(config)

    def remove(self, stream_id: str, timeout: float = 10.0) -> bool:
        """Stop one stream and forget it everywhere once its last frame has been through the stages and
        sinks. True when that finished within `timeout` s (else it finishes later)."""
        with self._admin:
            with self._lock:
                paused = self._paused.pop(stream_id, None) is not None
                stopping = self._removing.get(stream_id) if paused else None
                if self._replacing.pop(stream_id, None) is not None:  # being replaced: it is not started again
                    stopping = self._removing.get(stream_id)
                    if stopping is None:  # its old reader has gone already
                        return True
            if paused and stopping is None:  # stopped before: only its drop counts are left
                self._parts.outputs.forget(stream_id)
                return True
            done = stopping or self._remove(stream_id)  # one still stopping from its pause is forgotten once stopped
        return done.wait(timeout)

    def replace(self, config: StreamConfig, timeout: float = 10.0) -> None:
        """Give a stream a new config: it alone restarts (a new seq, new tracks); a paused one keeps its pause.
        NoSuchStream for an unknown id; ConfigError for an unknown lane, and nothing changes then."""
        with self._admin:
            self._get(config.id)
            if config.id in self._paused:
                with self._lock:
                    self._paused[config.id] = config
                return
            self._check_lane(config)
            stopped = self._remove(config.id)
            with self._lock:
                self._replacing[config.id] = config
        # Waited for without the admin lock: the runner's loop forgets the old stream (`handle_finished`), and a
        # stop asked for meanwhile takes that lock in the same loop (the new stream is then refused: not running).
        # A removal meanwhile takes the marker, and the new stream is not started.
        stopped.wait(timeout)
        with self._admin:
            with self._lock:
                ours = self._replacing.get(config.id) is config
                if ours:
                    del self._replacing[config.id]
            if not ours:
                raise PipelineError(f"stream '{config.id}' was removed while its change was applied; "
                                    "it was not started again")
            if not stopped.is_set():
                raise PipelineError(f"stream '{config.id}' did not stop within {timeout:g} s; it is "
                                    "stopping: apply the change again in a moment")
            self._add(config)

    def pause(self, stream_id: str, timeout: float = 10.0) -> bool:
        """Stop a stream but keep it listed (state `paused`) until `resume`; True once it has stopped."""
        with self._admin:
            config = self._get(stream_id)
            if stream_id in self._paused:  # paused before: done once it has stopped (it may still be stopping)
                with self._lock:
                    done = self._removing.get(stream_id)
            else:
                with self._lock:  # paused before it is stopped: a stream that had ended is forgotten at once
                    self._paused[stream_id] = config
                try:
                    done = self._remove(stream_id)
                except BaseException:
                    with self._lock:
                        self._paused.pop(stream_id, None)
                    raise
        return done is None or done.wait(timeout)

    def resume(self, stream_id: str) -> None:
        """Start a paused stream again (as a new stream: seq from 0, new tracks); a running one runs on."""
        with self._admin:
            self._get(stream_id)
            with self._lock:
                config = self._paused.get(stream_id)
            if config is None:
                return
            if stream_id in self._removing:
                raise PipelineError(f"stream '{stream_id}' is still stopping; resume it in a moment")
            self._add(config)
            with self._lock:
                del self._paused[stream_id]

    def configs(self) -> list[StreamConfig]:
        """Every stream, running or paused, in the config's order, then those it lacks in the order they were added
        (one being removed is not listed): a camera paused, resumed or changed keeps its place."""
        with self._lock:
            running = {sid: c for sid, c in self._streams.items() if sid not in self._removing}
            listed = [*running.values(), *(c for s, c in self._paused.items() if s not in running)]
        order = {config.id: i for i, config in enumerate(self._parts.config.streams)}
        return sorted(listed, key=lambda config: order.get(config.id, len(order)))

    def paused(self) -> set[str]:
        with self._lock:
            return set(self._paused)

    def all_ended(self) -> bool:
        """Every stream the run still has ended by itself (files finished, streams failed): a run of files
        is over. A run whose streams were all removed or paused is not."""
        with self._lock:
            active = [sid for sid in self._streams if sid not in self._removing]
        return bool(active) and self._parts.buffer.finished

    def handle_finished(self) -> None:
        """Streams whose end every sink has handled: drop their packets; forget the removed ones."""
        while True:
            try:
                stream_id = self._finished.get_nowait()
            except queue.Empty:
                return
            self._parts.sources.end_clips(stream_id)
            with self._lock:
                self._done.add(stream_id)
                removed = stream_id in self._removing
            if removed:
                self._forget(stream_id)

    def stop_all(self) -> None:
        """No more changes; every stream stops (a change in progress finishes first, so its stream too)."""
        self.accepting = False
        with self._admin:
            self._parts.sources.stop_all()

    # -- the changes, `_admin` held -------------------------------------------------------------
    def _add(self, config: StreamConfig) -> None:
        if not self.accepting:
            raise PipelineError(f"stream '{config.id}' not added: the pipeline is not running")
        with self._lock:
            if config.id in self._streams:
                raise StreamExists(f"stream '{config.id}' already exists; remove it first or choose another id")
        with self._lock:  # as many as the config started with, or as run now with this one
            nvdec = max(sum(s.decoder == "nvdec" for s in self._plan.streams), len(self._nvdec - {config.id}) + 1)
        plan = plan_stream(config, self._plan, nvdec_streams=nvdec)
        self._parts.buffer.add_stream(config)
        try:
            self._parts.stages.add_stream(config.id, config.url, plan.live)
        except BaseException:
            self._parts.buffer.discard_stream(config.id)
            raise
        with self._lock:
            self._streams[config.id] = config
            self._done.discard(config.id)
            if plan.decoder == "nvdec":
                self._nvdec.add(config.id)
        try:
            self._parts.sources.add(config, plan)  # from here on its end comes through the buffer
        except Exception as exc:  # its stages and sinks know it: it ends there, and is forgotten, as a removed one
            with self._lock:
                self._removing[config.id] = threading.Event()
            self._parts.buffer.discard_stream(config.id)
            self._parts.stages.end_stream(config.id)
            again = "it is still paused: resume it" if config.id in self._paused else "it was not added: add it again"
            raise PipelineError(f"stream '{config.id}' could not be started ({exc}); {again} once the cause is "
                                "fixed") from exc

    def _remove(self, stream_id: str) -> threading.Event:
        with self._lock:
            if stream_id not in self._streams:
                raise NoSuchStream(f"no stream '{stream_id}'; streams: {sorted(self._streams)}")
            if stream_id in self._removing:  # on its way out already (its source may be gone)
                return self._removing[stream_id]
            done = self._removing[stream_id] = threading.Event()
            ended = stream_id in self._done
        self._parts.buffer.remove_stream(stream_id)
        self._parts.sources.stop(stream_id)
        if ended:  # it had ended before: nothing more will come through
            self._forget(stream_id)
        return done

    def _forget(self, stream_id: str) -> None:
        self._parts.sources.forget(stream_id)
        self._parts.telemetry.forget(stream_id)
        self._parts.stages.forget(stream_id)
        if stream_id not in self._paused:  # a paused camera's drop counts stay: they are the camera's, not one run's
            self._parts.outputs.forget(stream_id)
        with self._lock:
            self._streams.pop(stream_id, None)
            self._done.discard(stream_id)
            self._nvdec.discard(stream_id)
            done = self._removing.pop(stream_id)
        release_free_memory()  # its decoder, encoder and world are gone: their freed pages go back now
        done.set()

    def _get(self, stream_id: str) -> StreamConfig:
        """A running or paused stream's config; one being removed (not paused) is gone already."""
        with self._lock:
            if stream_id in self._replacing:
                raise PipelineError(f"stream '{stream_id}' is being changed (its old reader is stopping); "
                                    "try again in a moment")
            config = self._paused.get(stream_id)
            if config is None and stream_id not in self._removing:
                config = self._streams.get(stream_id)
            listed = sorted(self._streams.keys() | self._paused)  # a paused camera is one too
        if config is None:
            raise NoSuchStream(f"no stream '{stream_id}'; streams: {listed}")
        return config

    def _check_lane(self, config: StreamConfig) -> None:
        lanes = {lane.name for lane in self._parts.config.lanes}
        if config.lane not in lanes:
            raise ConfigError(f"lane: unknown lane '{config.lane}'; defined lanes: {sorted(lanes)}")
