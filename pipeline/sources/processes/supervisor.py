"""`DecodeProcesses`: the children that decode streams, one thread here receiving all their frames and
one sending them streams, credits, slot returns, stops and clip requests.

Streams are added and stopped one at a time while the others run: a new stream goes to the child with
the fewest streams, or to a new child while there are fewer than `max_children`. A child that dies (a
decoder crash, say) does not stop the others: its live streams go on in a new child after their
reconnect backoff (seq and pts continue as after a reconnect), its files fail.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import queue
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from pipeline import logs
from pipeline.config.models import StreamConfig
from pipeline.logs import LogFormat
from pipeline.sources.processes import messages as msg
from pipeline.sources.processes.child import child_main
from pipeline.sources.processes.remote import RemoteWorker
from pipeline.sources.processes.slots import DeviceFrames, SlotRef
from pipeline.types import Frame

log = logging.getLogger(__name__)

_exiting = threading.Event()
_running: weakref.WeakSet = weakref.WeakSet()  # every DecodeProcesses not closed


def _at_exit() -> None:
    """Before multiprocessing's own exit hook (atexit runs LIFO), which would SIGTERM the children and wait for
    them: they ignore SIGTERM (a stop is the main process's to make), so children left by an exit that skipped
    `close` (an error on the way out) are killed here instead of keeping this process from ever exiting."""
    _exiting.set()
    for processes in list(_running):
        processes.kill_children()


atexit.register(_at_exit)

ClipDoneCallback = Callable[[Path, str | None], None]


def _clip_done(on_done: ClipDoneCallback, path: Path, error: str | None) -> None:
    try:
        on_done(path, error)
    except Exception:  # noqa: BLE001 - as with clips cut in this process: the frames and ends received with it go on
        log.exception("decode processes: on_done for clip %s failed", path)


class _Child:
    def __init__(self, number: int, context, device: int, log_setup: tuple[int, LogFormat],
                 plugin_modules: list[str]):
        self.number = number
        self.name = f"decode-proc:{number}"
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(target=child_main, args=(child_conn, device, log_setup, plugin_modules),
                                       name=self.name, daemon=True)
        self.process.start()
        child_conn.close()
        self.workers: dict[int, RemoteWorker] = {}
        self.indices = itertools.count()
        self.dead = False  # its pipe closed
        self.exited = False  # and it exited: its process handle is closed

    def load(self) -> int:
        return sum(not w.ended.is_set() for w in self.workers.values())


class DecodeProcesses:
    """buffer: where frames go (the `AlignedBuffer`: `put`, `end_stream`, `on_room`). max_children: how
    many decode processes at most. per_child: a new child only once each has this many streams (0: a new
    child for every stream until there are `max_children`, then the least loaded). plugin_modules: imported
    in each child (sources that plugins register)."""

    def __init__(self, buffer: Any, max_children: int, device: int = 0, plugin_modules: list[str] = (),
                 per_child: int = 0):
        self._context = multiprocessing.get_context("spawn")
        self._buffer = buffer
        self._max = max(1, max_children)
        self._per_child = per_child
        self._device = device
        self._log = (logging.getLogger().getEffectiveLevel(), logs.current_format())  # the children log alike
        self._plugins = list(plugin_modules)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._restarts: list[tuple[float, RemoteWorker, tuple | None]] = []  # (due, worker, resume point)
        self._clips: dict[int, tuple[int, Path, ClipDoneCallback]] = {}  # request -> child, path, on_done
        self._requests = itertools.count()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._copies: DeviceFrames | None = None  # made at the first device frame
        self._closing = False
        self.workers: list[RemoteWorker] = []
        self._receiver = threading.Thread(target=self._receive, name="decode-procs:in", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="decode-procs:out", daemon=True)
        self._receiver.start()
        self._sender.start()
        _running.add(self)

    @property
    def count(self) -> int:
        """Decode processes running now."""
        with self._lock:
            return sum(not c.dead for c in self._children)

    # -- streams --------------------------------------------------------------------------------
    def add(self, config: StreamConfig, decoder: str, packet_ring_s: float = 0.0) -> RemoteWorker:
        """Start decoding `config` in a child (the buffer already has its ring); returns its handle."""
        worker = RemoteWorker(config, decoder, packet_ring_s, self._stop)
        if not config.realtime:  # mirror the ring's permits as credits in the child
            self._buffer.on_room(config.id, lambda n, w=worker: self._outbox.put(("credit", w.child, w.index, n)))
        with self._lock:
            self.workers.append(worker)
            try:
                self._place(worker, None)
            except BaseException:  # no child could be started for it (out of file descriptors, for one)
                self.workers.remove(worker)
                raise
        return worker

    def forget_packets(self, worker: RemoteWorker) -> None:
        """No more clips of the stream will be asked for: its child writes its pending ones, drops its packets."""
        self._outbox.put(("msg", worker.child, msg.ForgetStream(worker.index)))

    def forget(self, worker: RemoteWorker) -> None:
        """The stream was removed and has ended everywhere: drop its handle."""
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)
                self._children[worker.child].workers.pop(worker.index, None)

    def record_clip(self, worker: RemoteWorker, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: ClipDoneCallback | None) -> bool:
        """Ask the stream's child for a clip; `on_done` comes when it is written (or could not be). False while the
        stream moves to a new child (none of its packets is kept anywhere then)."""
        request = next(self._requests)
        with self._lock:
            if self._children[worker.child].dead:  # moving to a new child: its packets died with the old one
                return False  # the caller counts a missed clip
            self._clips[request] = (worker.child, Path(path), on_done or (lambda path, error: None))
            self._outbox.put(("msg", worker.child, msg.RecordClip(worker.index, request, ts_ns, before_s, after_s,
                                                              str(path))))
        return True

    def _stop(self, worker: RemoteWorker) -> None:
        with self._lock:  # where it runs now: a restart places it under the lock, after looking at stop_requested
            self._outbox.put(("stop", worker.child, worker.index))

    def _place(self, worker: RemoteWorker, resume: tuple | None) -> None:
        """Give `worker` to the least loaded child, or a new one while there are fewer than the maximum and
        the least loaded has `per_child` streams (any, when 0) (lock held)."""
        alive = [c for c in self._children if not c.dead]
        child = min(alive, key=_Child.load, default=None)
        if child is None or (child.load() >= max(1, self._per_child) and len(alive) < self._max):
            child = _Child(len(self._children), self._context, self._device, self._log, self._plugins)
            self._children.append(child)
        worker.child, worker.index, worker.pid = child.number, next(child.indices), child.process.pid
        child.workers[worker.index] = worker
        self._outbox.put(("msg", child.number, msg.AddStream(worker.index, worker.config, worker.decoder,
                                                         worker.packet_ring_s, resume)))

    # -- the sending thread --------------------------------------------------------------------
    def _send_loop(self) -> None:
        """Forward the outbox in order; credits, slot returns and stops merged per child into one message."""
        while True:
            try:
                items = [self._outbox.get(timeout=1.0)]
            except queue.Empty:
                if not self._receiver.is_alive():
                    return  # the receiver ended without its last word (it crashed): nobody is listening
                continue
            while True:
                try:
                    items.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            merged: dict[int, msg.Control] = {}
            for item in items:
                if item is None:
                    return
                kind, child = item[0], item[1]
                if kind == "msg":
                    self._send(child, merged.pop(child, None))
                    self._send(child, item[2])
                    continue
                control = merged.setdefault(child, msg.Control(Counter(), [], []))
                if kind == "credit":
                    control.credits[item[2]] += item[3]
                elif kind == "free":
                    control.freed.extend(item[2])
                else:
                    control.stops.append(item[2])
            for child, control in merged.items():
                self._send(child, control)

    def _send(self, number: int, message) -> None:
        if message is None:
            return
        if isinstance(message, msg.Control):
            message = msg.Control(dict(message.credits), message.freed, message.stops)
        try:
            self._children[number].conn.send(message)
        except (OSError, ValueError, TypeError):  # TypeError: the receiver closed its pipe during the send
            pass  # that child is gone; the receiver reports it

    # -- the receiving thread ------------------------------------------------------------------
    def _receive(self) -> None:
        """Frames, counters, ends and clips from every child, until closed and every child has exited."""
        while True:
            with self._lock:
                conns = {c.conn: c for c in self._children if not c.dead}
                if self._closing and not conns:
                    break
            try:
                self._receive_once(conns)
            except Exception:  # noqa: BLE001 - every camera's frames come through here: log, go on with the next pass
                log.exception("decode processes: receiving failed; going on")
                time.sleep(0.2)
        self._outbox.put(None)

    def _receive_once(self, conns: dict) -> None:
        ready = multiprocessing.connection.wait(list(conns), 0.2) if conns else time.sleep(0.2)
        received, closed = [], []
        for conn in ready or []:
            child = conns[conn]
            try:
                received.append((child, conn.recv()))
                while conn.poll():
                    received.append((child, conn.recv()))
            except (EOFError, OSError):
                closed.append(child)
        self._deliver(received)
        for child in closed:
            self._child_ended(child)
        self._restart_due()

    def _deliver(self, received: list) -> None:
        frames = self._frames(received)
        if self._copies is not None:
            freed: dict[int, list] = {}
            for (number, index), generation, slot in self._copies.finish():
                freed.setdefault(number, []).append((index, generation, slot))
            for number, slots in freed.items():
                self._outbox.put(("free", number, slots))
        for (child, message), frame in zip(received, frames):
            if frame is not None:
                if not self._buffer.put(frame, timeout=0.1):  # credits make room certain unless it closed
                    log.debug("%s: frame %d not taken (the buffer is closed)", frame.stream_id, frame.seq)
            else:
                self._handle(child, message)

    def _frames(self, received: list) -> list[Frame | None]:
        """A Frame for each frame message received (None for other messages and forgotten streams); device
        slots are copied into frame-owned arrays, all of them in one group."""
        slots = [((child.number, message.index), message.payload) for child, message in received
                 if isinstance(message, msg.FrameMsg) and isinstance(message.payload, SlotRef)]
        if slots and self._copies is None:
            self._copies = DeviceFrames(self._device)
        copies = iter(self._copies.copy_all(slots) if slots else [])
        frames: list[Frame | None] = []
        for child, message in received:
            if not isinstance(message, msg.FrameMsg):
                frames.append(None)
                continue
            image = next(copies) if isinstance(message.payload, SlotRef) else message.payload
            worker = child.workers.get(message.index)
            if worker is None or isinstance(image, Exception):  # forgotten meanwhile, or its copy failed
                if worker is not None:
                    worker.copy_failed(image)
                    if not worker.config.realtime:  # the frame took a credit that no ring will give back
                        self._outbox.put(("credit", child.number, message.index, 1))
                frames.append(None)
                continue
            frames.append(Frame(worker.config.id, message.seq, message.pts_ns, message.wall_ns, image,
                                message.width, message.height, message.pixel_format, index=message.frame_index,
                                epoch=message.epoch))
            worker.saw(frames[-1])
        return frames

    def _handle(self, child: _Child, message) -> None:
        if isinstance(message, msg.Stats):
            for index, stats in message.by_index.items():
                worker = child.workers.get(index)
                # The child reads its counters before sending them, so a stream can end in between: its final
                # state (finished, failed, and why) came with `Ended` and is not overwritten by an older one.
                if worker is not None and not worker.ended.is_set():
                    worker.update(stats)
        elif isinstance(message, msg.Ended):
            worker = child.workers[message.index]
            worker.update(message.stats)
            self._end(worker)
        elif isinstance(message, msg.ClipDone):
            with self._lock:
                _, _, on_done = self._clips.pop(message.request)
            _clip_done(on_done, Path(message.path), message.error)

    def _end(self, worker: RemoteWorker) -> None:
        """The stream has ended: unmap its slots (a child does not exit while another process maps its
        memory) and let the buffer flush its tail."""
        if self._copies is not None:
            self._copies.close((worker.child, worker.index))
        self._buffer.end_stream(worker.config.id)
        worker.ended.set()

    def _child_ended(self, child: _Child) -> None:
        """Its pipe closed: a normal exit, or with streams still running (it crashed or was killed): then
        live streams move to a new child after their reconnect backoff, the others fail."""
        with self._lock:
            child.dead = True
            lost = [(r, path, on_done) for r, (n, path, on_done) in self._clips.items() if n == child.number]
            for request, _, _ in lost:
                del self._clips[request]
        for _, path, on_done in lost:
            _clip_done(on_done, path, f"its decode process {child.name} ended before the clip was written")
        child.conn.close()
        child.process.join(0.5)
        code = child.process.exitcode
        with self._lock:  # exited: its handle's descriptors go too (close() joins the children it finds alive)
            if code is not None and not self._closing:
                child.process.close()
                child.exited = True
        running = [w for w in child.workers.values() if not w.ended.is_set()]
        child.workers = {}  # the ended ones were forgotten or will be; the running ones move or fail below
        if not running or _exiting.is_set():
            return
        how = (f"was killed by signal {-code}" if code is not None and code < 0 else
               f"exited with code {code}" if code is not None else "closed its pipe")
        for worker in running:
            if self._copies is not None:
                self._copies.close((worker.child, worker.index))
            message = f"stream '{worker.config.id}': its decode process {child.name} {how}"
            if worker.config.is_live and not worker.stop_requested and not self._closing:
                delay = worker.backoff.next_delay()
                resume = worker.restarting(f"{message}; restarting it in a new process in {delay:.1f} s")
                self._restarts.append((time.monotonic() + delay, worker, resume))
            else:
                worker.fail(f"{message}; the stream has stopped (see the log above for the cause; "
                            "decode_processes: 0 decodes in threads)")
                self._end(worker)

    def _restart_due(self) -> None:
        """Re-add the streams whose restart is due; streams stopped meanwhile end instead."""
        now = time.monotonic()
        for entry in list(self._restarts):
            due, worker, resume = entry
            if now < due and not (worker.stop_requested or self._closing):
                continue
            self._restarts.remove(entry)
            with self._lock:
                stopped = worker.stop_requested or self._closing
                if not stopped:
                    try:
                        self._place(worker, resume)
                    except Exception as exc:  # noqa: BLE001 - e.g. no process could be started (EMFILE, ENOMEM)
                        delay = worker.backoff.next_delay()
                        log.error("stream '%s': cannot start a decode process (%s); trying again in %.1f s",
                                  worker.config.id, exc, delay)
                        self._restarts.append((now + delay, worker, resume))
            if stopped:
                worker.update({**worker.stats(), "state": "stopped"})
                self._end(worker)

    # -- shutdown ---------------------------------------------------------------------------------
    def kill_children(self) -> None:
        """Kill every child still running (at exit, when `close` was skipped)."""
        with self._lock:
            children = [c for c in self._children if not c.exited]
        for child in children:
            if child.process.is_alive():
                child.process.kill()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every stream and every child; wait up to `timeout` s for them to exit.

        A child whose streams have all ended is only tearing down its CUDA context and decoders
        (that can take seconds while the GPU is busy); it is left to finish. A child with a stream
        that has not ended is stuck and is terminated.
        """
        with self._lock:
            self._closing = True
            children = [c for c in self._children if not c.exited]
            for child in children:
                self._outbox.put(("msg", child.number, msg.Exit()))
        deadline = time.monotonic() + timeout
        for child in children:
            child.process.join(max(deadline - time.monotonic(), 0))
            if child.process.is_alive() and not all(w.ended.is_set() for w in child.workers.values()):
                log.warning("%s did not stop within %.0f s; killing it", child.name, timeout)
                child.process.kill()  # it ignores SIGTERM (its streams stop when this process says so)
        self._receiver.join(max(deadline - time.monotonic(), 1.0))
        _running.discard(self)
