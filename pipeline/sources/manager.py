"""`Sources`: every stream's reader, in a thread here or in a decode process, added and removed one at a
time while the others run, and the packets each keeps for event clips (it is the pipeline's `ClipRecorder`)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from pipeline.config.models import StreamConfig
from pipeline.config.resolve import StreamPlan
from pipeline.sources.packets import PacketRings
from pipeline.sources.processes import DecodeProcesses, RemoteWorker
from pipeline.sources.reader import FrameSink
from pipeline.sources.worker import StreamWorker, Worker

log = logging.getLogger(__name__)


class Sources:
    """sink: where frames go (the `AlignedBuffer`). decode_processes: how many children may decode
    (0: every stream in a thread here); per_child: see `DecodeProcesses`. plugin_modules: imported in each child."""

    def __init__(self, sink: FrameSink, *, decode_processes: int = 0, per_child: int = 0, device: int = 0,
                 plugin_modules: list[str] = ()):
        self._sink = sink
        self._max_children = decode_processes
        self._per_child = per_child
        self._device = device
        self._plugins = list(plugin_modules)
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._rings: PacketRings | None = None
        self._children: DecodeProcesses | None = None

    @property
    def children(self) -> DecodeProcesses | None:
        """The decode processes, once a stream went to one."""
        return self._children

    def add(self, config: StreamConfig, plan: StreamPlan) -> Worker:
        """Start reading a stream as `plan` says; its ring in the sink must exist already."""
        with self._lock:
            if config.id in self._workers:
                raise ValueError(f"stream '{config.id}' is already being read")
            if plan.in_child and self._max_children:
                if self._children is None:
                    self._children = DecodeProcesses(self._sink, self._max_children, self._device, self._plugins,
                                                     per_child=self._per_child)
                worker: Worker = self._children.add(config, plan.decoder, plan.packet_ring_s)
            else:
                rings = self._packet_rings(plan.packet_ring_s) if plan.packet_ring_s else None
                worker = StreamWorker(config, self._sink, packets=rings, decoder=plan.decoder)
            self._workers[config.id] = worker
        try:
            worker.start()
        except BaseException:
            with self._lock:
                self._workers.pop(config.id, None)
            raise
        return worker

    def _packet_rings(self, keep_s: float) -> PacketRings:
        if self._rings is None:
            self._rings = PacketRings(keep_s)
        return self._rings

    def stop(self, stream_id: str) -> None:
        """Ask one stream to stop; returns at once (its end reaches the sink when it has stopped)."""
        self.worker(stream_id).stop()

    def end_clips(self, stream_id: str) -> None:
        """No more clips of the stream will be asked for: write its pending ones, drop its packets."""
        worker = self._workers.get(stream_id)
        if isinstance(worker, RemoteWorker):
            self._children.forget_packets(worker)
        elif self._rings is not None:
            self._rings.end_stream(stream_id)

    def forget(self, stream_id: str) -> None:
        """Drop a removed stream's handle (after it has ended everywhere)."""
        with self._lock:
            worker = self._workers.pop(stream_id, None)
        if isinstance(worker, RemoteWorker):
            self._children.forget(worker)

    def worker(self, stream_id: str) -> Worker:
        try:
            return self._workers[stream_id]
        except KeyError:
            raise KeyError(f"no stream '{stream_id}'; streams: {sorted(self._workers)}") from None

    def workers(self) -> dict[str, Worker]:
        with self._lock:
            return dict(self._workers)

    def stats(self) -> dict[str, dict]:
        return {stream_id: worker.stats() for stream_id, worker in self.workers().items()}

    def record_clip(self, stream_id: str, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: Callable[[Path, str | None], None] | None = None) -> bool:
        """The `ClipRecorder` the media sink uses: cut where the stream's packets are."""
        worker = self._workers.get(stream_id)
        if isinstance(worker, RemoteWorker):
            return self._children.record_clip(worker, ts_ns, before_s, after_s, path, on_done)
        if self._rings is None:
            return False
        return self._rings.record_clip(stream_id, ts_ns, before_s, after_s, path, on_done)

    def stop_all(self) -> None:
        for worker in self.workers().values():
            worker.stop()

    def join_all(self, timeout: float) -> bool:
        """Wait up to `timeout` s in all for every stream to end; False when one was still running (logged)."""
        deadline = time.monotonic() + timeout
        stuck = [sid for sid, worker in self.workers().items() if not worker.join(max(deadline - time.monotonic(), 0))]
        for stream_id in stuck:
            log.warning("decode worker %s did not stop within %.0f s", stream_id, timeout)
        return not stuck

    def close(self) -> None:
        """After every stream has stopped: end the decode processes, write the clips still pending."""
        if self._children is not None:
            self._children.close()
        if self._rings is not None:
            self._rings.close()

    def packet_stats(self) -> dict[str, int]:
        return self._rings.stats() if self._rings is not None else {}
