"""The decode process: ordinary `StreamWorker`s whose frames go to the main process over a pipe.

It starts with no stream; the main process adds and stops streams (`AddStream`, `Control`) until it
says `Exit` (or its end of the pipe closes), then the child stops what still runs and exits once
every stream has ended and said so. A file stream sends a frame only with a credit (the main ring's
room, mirrored); a live stream sends without and the main process drops its oldest frame as usual.
NVDEC pictures wait in the stream's device slots (`slots.SlotPool`); host pictures travel in the message.
Packets for event clips stay here, in this process's `PacketRings`, and clips are cut here on request.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np

from pipeline import logs, plugins
from pipeline.logs import LogFormat
from pipeline.masking import mask_url
from pipeline.sources.packets import PacketRings
from pipeline.sources.processes import messages as msg
from pipeline.sources.processes.slots import SlotPool
from pipeline.sources.worker import StreamWorker, WorkerState
from pipeline.types import Frame, frame_to_rgb

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.5
"""How often a child reports its workers' counters."""

EXTRA_SLOTS = 4
"""Device slots per stream beyond its ring size: frames on their way while the ring is full."""

FORGET_JOIN_S = 2.0
"""How long a stream's end waits for its worker's thread to exit; its slots are freed once it has (one still running
after that keeps them until this process exits)."""


def child_main(conn, device: int, log_setup: tuple[int, LogFormat], plugin_modules: list[str]) -> None:
    """Entry point of a decode process (started with `spawn`, so it never inherits a CUDA context); `log_setup`:
    the level and format of the main process's log, which this one writes to the same stderr."""
    # Ctrl-C and a service manager's stop reach the whole process group: the main process stops the streams and
    # then says Exit (or its pipe closes), so that a stop drains them instead of failing them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(*log_setup)
    plugins.load(plugin_modules)
    child = _Child(conn, device)
    threading.Thread(target=child.control_loop, name="control", daemon=True).start()
    child.report_until_exit()
    logging.shutdown()
    os._exit(0)  # every stream has ended and said so; skip tearing down decoder and CUDA state one by one


class _Stream:
    """One stream in the child: its worker and what its frames need on the way out."""

    def __init__(self, child: _Child, index: int, message: msg.AddStream):
        config = message.config
        self.child, self.index, self.live = child, index, config.realtime
        self.credits = threading.Semaphore(config.ring_size)
        self.slots = SlotPool(config.ring_size + EXTRA_SLOTS, child.device) if message.decoder == "nvdec" else None
        rings = child.rings(message.packet_ring_s) if message.packet_ring_s else None
        self.worker = StreamWorker(config, self, packets=rings, pictures=self.slots, resume=message.resume,
                                   decoder=message.decoder)

    def put(self, frame: Frame, timeout: float) -> bool:
        """The worker's `FrameSink`: send one frame (files: only with a credit)."""
        if not self.live and not self.credits.acquire(timeout=timeout):
            return False
        image, pixel_format = frame.image, frame.pixel_format
        if pixel_format == "nv12" and not isinstance(image, np.ndarray):  # NV12 in device memory
            payload = self.slots.ref(image, timeout=0.0 if self.live else timeout)
            if payload is None:
                if not self.live:
                    self.credits.release()
                return False
        else:
            payload = image if pixel_format in ("rgb24", "nv12") else frame_to_rgb(frame)
            pixel_format = "rgb24" if pixel_format == "avframe" else pixel_format
        self.child.send(msg.FrameMsg(self.index, frame.seq, frame.pts_ns, frame.wall_ns, frame.width, frame.height,
                                 pixel_format, payload, frame.index, frame.epoch))
        return True

    def end_stream(self, stream_id: str) -> None:
        self.child.send(msg.Ended(self.index, self.worker.stats()))


class _Child:
    def __init__(self, conn, device: int):
        self.conn = conn
        self.device = device
        self.streams: dict[int, _Stream] = {}
        self.exiting = threading.Event()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._rings: PacketRings | None = None

    def rings(self, keep_s: float) -> PacketRings:
        with self._lock:
            if self._rings is None:
                self._rings = PacketRings(keep_s)
            return self._rings

    def send(self, message) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                pass  # the main process is gone; the control loop stops the workers

    def control_loop(self) -> None:
        try:
            while not self.exiting.is_set():
                message = self.conn.recv()
                try:
                    self._handle(message)
                except Exception:  # noqa: BLE001 - a bug in one message must not leave every stream unstoppable
                    log.exception("decode process: handling %s failed; going on", type(message).__name__)
        except (EOFError, OSError):  # the main process is gone: nobody wants these frames any more
            self.exiting.set()
        for stream in self._all():
            stream.worker.stop()

    def _handle(self, message) -> None:
        if isinstance(message, msg.Control):
            self._control(message)
        elif isinstance(message, msg.AddStream):
            self._add(message)
        elif isinstance(message, msg.RecordClip):
            self._record_clip(message)
        elif isinstance(message, msg.ForgetStream):
            self._forget(message.index)
        elif isinstance(message, msg.Exit):
            self.exiting.set()

    def _add(self, message: msg.AddStream) -> None:
        """Start a stream; one that cannot start (its source's plugin not loaded here, say) fails alone."""
        try:
            stream = _Stream(self, message.index, message)
            stream.worker.start()
        except Exception as exc:  # noqa: BLE001 - that stream fails; the others go on
            config = message.config
            error = (f"stream '{config.id}' ({mask_url(config.url)}): cannot start in decode process {os.getpid()} "
                     f"({type(exc).__name__}: {exc}); the stream has stopped")
            log.error("%s", error)
            self.send(msg.Ended(message.index, {"state": WorkerState.FAILED.value, "last_error": error}))
            return
        with self._lock:
            self.streams[message.index] = stream

    def _forget(self, index: int) -> None:
        """The stream has ended everywhere: write its pending clips, drop its packets, its worker and its
        device slots (the main process unmapped them when the stream ended)."""
        stream = self.streams.get(index)
        if stream is None:
            return
        if self._rings is not None:
            self._rings.end_stream(stream.worker.config.id)
        # Its worker sent `Ended` as its thread's last act, so the thread is all but gone; not waiting for it left
        # the stream and its device slots here for good when this message came first.
        if stream.worker.join(FORGET_JOIN_S):
            with self._lock:
                del self.streams[index]
            if stream.slots is not None:
                stream.slots.close()

    def _control(self, message: msg.Control) -> None:
        """Credits, returned slots and stops; those of a stream forgotten meanwhile are moot."""
        streams = self.streams
        for index, n in message.credits.items():
            if index in streams:
                streams[index].credits.release(n)
        for index, generation, slot in message.freed:
            if index in streams:
                streams[index].slots.free(generation, slot)
        for index in message.stops:
            if index in streams:
                streams[index].worker.stop()

    def _record_clip(self, message: msg.RecordClip) -> None:
        stream = self.streams.get(message.index)

        def done(path: Path, error: str | None) -> None:
            self.send(msg.ClipDone(message.request, str(path), error))

        recorded = stream is not None and self._rings is not None and self._rings.record_clip(
            stream.worker.config.id, message.ts_ns, message.before_s, message.after_s, Path(message.path), done)
        if not recorded:
            done(Path(message.path), "no buffered packets of this stream hold the event's frame")

    def _all(self) -> list[_Stream]:
        with self._lock:
            return list(self.streams.values())

    def report_until_exit(self) -> None:
        """Send the running workers' counters every `STATS_INTERVAL_S` until told to exit and every
        stream has ended; then write the clips still pending."""
        while True:
            self.exiting.wait(STATS_INTERVAL_S)
            streams = self._all()
            running = {s.index: s.worker.stats() for s in streams if not s.worker.join(0)}
            if running:
                self.send(msg.Stats(running))
            if self.exiting.is_set():
                for stream in streams:
                    stream.worker.stop()
                if all(stream.worker.join(STATS_INTERVAL_S) for stream in streams):
                    break
        if self._rings is not None:
            self._rings.close()
        with self._send_lock:
            self.conn.close()
