"""Decode processes: stream workers in child processes, their frames handed to this process.

Why: the decode threads of one process share one interpreter lock, and PyNvVideoCodec holds it
while NVDEC works, so 64 NVDEC streams in one process decode ~2,100-3,700 frames/s on a GPU whose
decoders do ~5,400, and every millisecond the detector spends in Python comes out of that. In a
child, each group of streams has an interpreter lock of its own.

Each child (`spawn`ed, so it never inherits a CUDA context) runs an ordinary `StreamWorker` per
stream whose sink (`_ChildSink`) sends every frame over a pipe:
- NVDEC writes each picture straight into one of its stream's slots (`NvdecDecoder(allocate=...)`;
  copied there when none was free): device memory the child allocates per stream and shares once
  through a CUDA IPC handle (again after a resolution change outgrows it). This process copies the
  slot into a frame-owned array, so a frame owns its memory exactly as in-process; one
  synchronisation covers each drained group of messages, then the slots go back to the child.
  Each child is a CUDA context of its own and the GPU time-slices between contexts, so a child
  makes as few GPU calls as it can (one copy per picture).
- a host frame (RGB numpy) travels inside the message.

Back-pressure is the buffer's own: a file stream's ring permits are mirrored in the child as
credits (a frame is sent only with one, and `AlignedBuffer.on_room` gives one back for every
permit released), so files lose nothing and this process never blocks on a put. Live streams send
without credits and the buffer drops their oldest frame as usual; a live frame that finds no free
slot is dropped in the child and counted in `dropped_sink`.
A child that dies (a decoder crash, say) does not stop the others: its live streams go on in a new
child after their reconnect backoff (seq and pts continue as after a reconnect), its files fail.
"""
from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
import weakref
from collections import Counter
from typing import Any

import numpy as np

from pipeline.backoff import Backoff
from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.sources.worker import StreamWorker, WorkerState
from pipeline.types import Frame, frame_to_rgb

log = logging.getLogger(__name__)

STREAMS_PER_PROCESS = 8
"""`decode_processes: auto` starts one child per this many NVDEC streams."""

STATS_INTERVAL_S = 0.5
"""How often a child reports its workers' counters."""

EXTRA_SLOTS = 4
"""Device slots per stream beyond its ring size: frames on their way while the ring is full."""

_exiting = threading.Event()
atexit.register(_exiting.set)  # runs before multiprocessing's own exit hook ends the children (LIFO)


def plan(config: PipelineConfig, packet_tap: Any) -> tuple[int, list[StreamConfig]]:
    """(number of decode processes, the streams they decode); the rest stay in threads here.

    `runtime.decode_processes`: an integer puts every stream in that many children (0 = none);
    "auto" puts the NVDEC streams there, one child per `STREAMS_PER_PROCESS`, when there are at
    least that many of them. Event clips need each stream's packets in this process, so with a
    media sink that records clips every stream stays here.
    """
    setting = config.runtime.decode_processes
    if packet_tap is not None:
        if setting not in (0, "auto"):
            log.warning("decode_processes: %s ignored: event clips need the packets in this process", setting)
        return 0, []
    if setting != "auto":
        return min(setting, len(config.streams)), list(config.streams) if setting else []
    nvdec = [s for s in config.streams if _decodes_on_nvdec(s)]
    if len(nvdec) < STREAMS_PER_PROCESS:
        return 0, []
    count = min(math.ceil(len(nvdec) / STREAMS_PER_PROCESS), os.cpu_count() or 1)
    log.info("decode_processes auto: %d NVDEC streams in %d processes", len(nvdec), count)
    return count, nvdec


def _decodes_on_nvdec(stream: StreamConfig) -> bool:
    if stream.decode == "cpu" or stream.url.startswith("synthetic://"):
        return False
    from pipeline.sources import _nvdec_status  # noqa: PLC0415 - the GPU stack loads only when asked

    return _nvdec_status()[0]


def make_processes(streams: list[StreamConfig], count: int, buffer: Any) -> DecodeProcesses | None:
    """`count` children (not started yet) sharing `streams` round-robin; None when there are none."""
    groups = [group for group in (streams[i::count] for i in range(count)) if group]
    return DecodeProcesses(groups, buffer) if groups else None


class RemoteWorker:
    """This process's handle on one stream decoded in a child: the `StreamWorker` interface the runner uses.

    `child`/`index` say where the stream runs now (a live stream moves to a new child when its child
    dies). Counters of earlier children are carried, so they keep growing across restarts.
    """

    def __init__(self, config: StreamConfig, owner: DecodeProcesses, child: int, index: int):
        self.config = config
        self.child = child
        self.index = index
        self._owner = owner
        self._stats: dict = {"state": WorkerState.NEW.value}
        self._carried: dict[str, int] = {}
        self._restart_error: str | None = None
        self.ended = threading.Event()
        self.stop_requested = False
        self.backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._last: tuple[int, int, int] | None = None  # seq, pts_ns, wall_ns of the newest frame
        self._period_ns = 0

    @property
    def state(self) -> WorkerState:
        return WorkerState(self._stats["state"])

    def start(self) -> None:
        """Start the children (once, whichever stream asks first)."""
        self._owner.start()

    def stop(self) -> None:
        self.stop_requested = True
        self._owner.send(("stop", self.child, self.index))

    def join(self, timeout: float | None = None) -> bool:
        return not self._owner.started or self.ended.wait(timeout)

    def stats(self) -> dict:
        return dict(self._stats)

    def update(self, stats: dict) -> None:
        self._stats = {**stats, **{key: stats.get(key, 0) + n for key, n in self._carried.items()}}
        if self._stats.get("last_error") is None and self._carried:
            self._stats["last_error"] = self._restart_error  # like a worker's, it stays after the reconnect

    def fail(self, message: str) -> None:
        log.error("%s", message)
        self._stats = {**self._stats, "state": WorkerState.FAILED.value, "last_error": message}

    def saw(self, frame: Frame) -> None:
        """A frame of this stream arrived (where a restarted child goes on from)."""
        if self._last is not None and frame.pts_ns > self._last[1]:
            self._period_ns = frame.pts_ns - self._last[1]
        self._last = (frame.seq, frame.pts_ns, frame.wall_ns)
        self.backoff.attempt = 0

    def restarting(self, message: str) -> tuple[int, int, int, int] | None:
        """Its child died and a new one will take the stream: carry the counters, count a
        reconnect; returns the `StreamWorker` resume point (None before the first frame)."""
        log.warning("%s", message)
        counters = {key: value for key, value in self._stats.items()
                    if isinstance(value, int) and not isinstance(value, bool)}
        self._carried = {**counters, "reconnects": counters.get("reconnects", 0) + 1}
        self._restart_error = message
        self._stats = {**self._stats, **self._carried, "state": WorkerState.RECONNECTING.value, "last_error": message}
        if self._last is None:
            return None
        seq, pts_ns, wall_ns = self._last
        return seq + 1, pts_ns, self._period_ns, wall_ns


class _Child:
    def __init__(self, number: int, streams: list[StreamConfig], context, level: int, device: int,
                 resumes: list | None = None):
        self.number = number
        self.name = f"decode-proc:{number}"
        self.conn, self.child_conn = context.Pipe(duplex=True)
        self.process = context.Process(target=child_main, args=(self.child_conn, streams, level, device, resumes),
                                       name=self.name, daemon=True)
        self.workers: list[RemoteWorker] = []

    def start(self) -> None:
        self.process.start()
        self.child_conn.close()


class DecodeProcesses:
    """The children decoding `groups` of streams, one thread here receiving all their frames and one
    sending them credits, slot returns and stop requests. `workers` follow the groups' order."""

    def __init__(self, groups: list[list[StreamConfig]], buffer: Any, device: int = 0):
        self._context = context = multiprocessing.get_context("spawn")
        self._level = level = logging.getLogger().getEffectiveLevel()
        self._children = [_Child(n, group, context, level, device) for n, group in enumerate(groups)]
        self._restarts: list[tuple[float, list[RemoteWorker], list]] = []  # (due, workers, resume points)
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        for n, (child, group) in enumerate(zip(self._children, groups)):
            child.workers = [RemoteWorker(cfg, self, n, i) for i, cfg in enumerate(group)]
            for worker in child.workers:
                if not worker.config.is_live:
                    buffer.on_room(worker.config.id, lambda k, n=n, i=worker.index: self._outbox.put(("credit", n, i, k)))
        self.workers = [worker for child in self._children for worker in child.workers]
        self._buffer = buffer
        self._device = device
        self._copies: DeviceFrames | None = None  # made at the first device frame
        self._start_lock = threading.Lock()
        self.started = False

    @property
    def count(self) -> int:
        return len(self._children)

    def start(self) -> None:
        with self._start_lock:
            if self.started:
                return
            for child in self._children:
                child.start()
            self.started = True
        threading.Thread(target=self._receive, name="decode-procs:in", daemon=True).start()
        threading.Thread(target=self._send_loop, name="decode-procs:out", daemon=True).start()

    def send(self, message: tuple) -> None:
        self._outbox.put(message)

    def _send_loop(self) -> None:
        """Forward the outbox, merged per child into one message: credits, slot returns, stops."""
        while True:
            items = [self._outbox.get()]
            while True:
                try:
                    items.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            merged: dict[int, tuple[Counter, list, list]] = {}
            for item in items:
                if item is None:
                    return
                kind, child = item[0], item[1]
                credits, freed, stops = merged.setdefault(child, (Counter(), [], []))
                if kind == "credit":
                    credits[item[2]] += item[3]
                elif kind == "free":
                    freed.extend(item[2])
                else:
                    stops.append(item[2])
            for child, (credits, freed, stops) in merged.items():
                try:
                    self._children[child].conn.send(("control", dict(credits), freed, stops))
                except (OSError, ValueError):
                    pass  # that child is gone; the receiver reports it

    def _receive(self) -> None:
        """Frames, end-of-stream and counters from every child until all have exited (and no
        restart is pending)."""
        open_conns = {child.conn: n for n, child in enumerate(self._children)}
        while open_conns or self._restarts:
            received, closed = [], []
            timeout = 0.2 if self._restarts else None  # a restart may come due, or its streams be stopped
            ready = multiprocessing.connection.wait(list(open_conns), timeout) if open_conns else time.sleep(timeout)
            for conn in ready or []:
                n = open_conns[conn]
                try:
                    received.append((n, conn.recv()))
                    while conn.poll():
                        received.append((n, conn.recv()))
                except (EOFError, OSError):
                    closed.append(conn)
            self._deliver(received)
            for conn in closed:
                self._child_ended(self._children[open_conns.pop(conn)])
            for child in self._restart_due():
                open_conns[child.conn] = child.number
        self._outbox.put(None)

    def _deliver(self, received: list) -> None:
        frames: list[Frame | None] = []
        for n, message in received:
            if message[0] != "frame":
                frames.append(None)
                continue
            _, index, seq, pts_ns, wall_ns, width, height, pixel_format, payload = message
            if isinstance(payload, SlotRef):
                if self._copies is None:
                    self._copies = DeviceFrames(self._device)
                payload = self._copies.copy((n, index), payload)
            worker = self._children[n].workers[index]
            frames.append(Frame(worker.config.id, seq, pts_ns, wall_ns, payload, width, height, pixel_format))
            worker.saw(frames[-1])
        if self._copies is not None:
            freed: dict[int, list] = {}
            for (n, index), generation, slot in self._copies.finish():
                freed.setdefault(n, []).append((index, generation, slot))
            for n, slots in freed.items():
                self._outbox.put(("free", n, slots))
        for (n, message), frame in zip(received, frames):
            if frame is not None:
                if not self._buffer.put(frame, timeout=0.1):  # credits make room certain unless it closed
                    log.debug("%s: frame %d not taken (the buffer is closed)", frame.stream_id, frame.seq)
            elif message[0] == "stats":
                for index, stats in message[1].items():
                    self._children[n].workers[index].update(stats)
            elif message[0] == "end":
                worker = self._children[n].workers[message[1]]
                worker.update(message[2])
                self._end(worker)

    def _end(self, worker: RemoteWorker) -> None:
        """The stream has ended: unmap its slots (a child does not exit while another process maps its
        memory) and let the buffer flush its tail."""
        if self._copies is not None:
            self._copies.close((worker.child, worker.index))
        self._buffer.end_stream(worker.config.id)
        worker.ended.set()

    def _child_ended(self, child: _Child) -> None:
        """Its pipe closed with streams still running (it crashed or was killed): live streams move
        to a new child after their reconnect backoff, the others fail."""
        running = [worker for worker in child.workers if not worker.ended.is_set()]
        if not running or _exiting.is_set():
            return  # a normal exit (perhaps still tearing down CUDA), or this interpreter is ending them
        child.process.join(2)
        code = child.process.exitcode
        how = (f"was killed by signal {-code}" if code is not None and code < 0 else
               f"exited with code {code}" if code is not None else "closed its pipe")
        for worker in running:
            if self._copies is not None:
                self._copies.close((worker.child, worker.index))
        again = [worker for worker in running if worker.config.is_live and not worker.stop_requested]
        for worker in running:
            if worker not in again:
                worker.fail(f"stream '{worker.config.id}': its decode process {child.name} {how}; the stream has "
                            "stopped (see the log above for the cause; decode_processes: 0 decodes in threads)")
                self._end(worker)
        if again:
            delay = again[0].backoff.next_delay()
            resumes = [worker.restarting(f"stream '{worker.config.id}': its decode process {child.name} {how}; "
                                         f"restarting it in a new process in {delay:.1f} s") for worker in again]
            self._restarts.append((time.monotonic() + delay, again, resumes))

    def _restart_due(self) -> list[_Child]:
        """Start the children whose restart is due; streams stopped meanwhile end instead."""
        started, now = [], time.monotonic()
        for entry in list(self._restarts):
            due, workers, resumes = entry
            stopped = [worker.stop_requested for worker in workers]
            if now < due and not all(stopped):
                continue
            self._restarts.remove(entry)
            for worker in (w for w, stop in zip(workers, stopped) if stop):
                worker.update({**worker.stats(), "state": WorkerState.STOPPED.value})
                self._end(worker)
            keep = [(w, r) for w, r, stop in zip(workers, resumes, stopped) if not stop]
            if not keep:
                continue
            child = _Child(len(self._children), [w.config for w, _ in keep], self._context, self._level, self._device,
                           [r for _, r in keep])
            for index, (worker, _) in enumerate(keep):
                worker.child, worker.index = child.number, index
            child.workers = [w for w, _ in keep]
            self._children.append(child)
            child.start()
            started.append(child)
        return started

    def close(self, timeout: float = 5.0) -> None:
        """After the workers were stopped: wait up to `timeout` s for the children to exit.

        A child whose streams have all ended is only tearing down its CUDA context and decoders
        (that can take seconds while the GPU is busy); it is left to finish. A child with a stream
        that has not ended is stuck and is terminated.
        """
        if not self.started:
            return
        deadline = time.monotonic() + timeout
        for child in self._children:
            child.process.join(max(deadline - time.monotonic(), 0))
            if child.process.is_alive() and not all(worker.ended.is_set() for worker in child.workers):
                log.warning("%s did not stop within %.0f s; terminating it", child.name, timeout)
                child.process.terminate()


class SlotRef:
    """A device frame waiting in the child's slot `slot` of pool `generation`; `handle` (CUDA IPC)
    comes with the first frame of each pool."""

    __slots__ = ("generation", "slot", "slot_bytes", "shape", "handle")

    def __init__(self, generation: int, slot: int, slot_bytes: int, shape: tuple, handle: bytes | None):
        self.generation, self.slot, self.slot_bytes, self.shape, self.handle = generation, slot, slot_bytes, shape, handle

    def __reduce__(self):
        return SlotRef, (self.generation, self.slot, self.slot_bytes, self.shape, self.handle)


class DeviceFrames:
    """This process's side of the device slots: opens each pool once, copies slots into frame-owned arrays."""

    def __init__(self, device: int):
        import cupy  # noqa: PLC0415 - GPU stack

        self._cupy = cupy
        self._device = cupy.cuda.Device(device)
        with self._device:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pools: dict[Any, tuple[int, int]] = {}  # stream key -> (generation, base pointer)
        self._closing: list[int] = []
        self._freed: list[tuple[Any, int, int]] = []

    def copy(self, key: Any, ref: SlotRef) -> Any:
        """A frame-owned copy of the slot `ref` of stream `key` (valid once `finish` returned)."""
        cupy = self._cupy
        runtime = cupy.cuda.runtime
        with self._device:
            if ref.handle is not None:
                old = self._pools.get(key)
                if old is not None:
                    self._closing.append(old[1])  # after this group's copies have finished
                base = runtime.ipcOpenMemHandle(ref.handle, runtime.cudaIpcMemLazyEnablePeerAccess)
                self._pools[key] = (ref.generation, base)
            generation, base = self._pools[key]
            if generation != ref.generation:  # a child sends each stream's pools in order, each with its handle
                raise RuntimeError(f"frame of slot pool {ref.generation} after pool {generation} of stream {key}")
            with self._stream:
                image = cupy.empty(ref.shape, cupy.uint8)
            runtime.memcpyAsync(image.data.ptr, base + ref.slot * ref.slot_bytes, image.nbytes,
                                runtime.memcpyDeviceToDevice, self._stream.ptr)
        self._freed.append((key, ref.generation, ref.slot))
        return image

    def close(self, key: Any) -> None:
        """Unmap stream `key`'s slots (call after `finish`: no copy from them is pending)."""
        pool = self._pools.pop(key, None)
        if pool is not None:
            with self._device:
                self._cupy.cuda.runtime.ipcCloseMemHandle(pool[1])

    def finish(self) -> list[tuple[Any, int, int]]:
        """Wait for the copies; the (stream key, generation, slot) the children may reuse."""
        self._stream.synchronize()
        with self._device:
            for base in self._closing:
                self._cupy.cuda.runtime.ipcCloseMemHandle(base)
        self._closing.clear()
        freed, self._freed = self._freed, []
        return freed


# -- the child --------------------------------------------------------------------------------------
def child_main(conn, streams: list[StreamConfig], log_level: int, device: int, resumes: list | None = None) -> None:
    """Entry point of a decode process: run `streams` until they end or are stopped (`resumes`: where
    each goes on from, for a child that replaces one that died)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sink = _ChildSink(conn, streams, device)
    resumes = resumes or [None] * len(streams)
    workers = [StreamWorker(cfg, sink, allocate=slots.allocate, resume=resume)
               for cfg, slots, resume in zip(streams, sink.slots, resumes)]
    sink.workers = workers
    threading.Thread(target=_control_loop, args=(conn, sink, workers), name="control", daemon=True).start()
    for worker in workers:
        worker.start()
    while not all(worker.join(STATS_INTERVAL_S) for worker in workers):
        sink.send(("stats", {i: w.stats() for i, w in enumerate(workers)}))
    sink.close()
    logging.shutdown()
    os._exit(0)  # every stream has ended and said so; skip tearing down decoder and CUDA state one by one


def _control_loop(conn, sink: _ChildSink, workers: list[StreamWorker]) -> None:
    try:
        while True:
            _, credits, freed, stops = conn.recv()
            for index, n in credits.items():
                sink.credits[index].release(n)
            for index, generation, slot in freed:
                sink.slots[index].free(generation, slot)
            for index in stops:
                workers[index].stop()
    except (EOFError, OSError):  # the main process is gone: nobody wants these frames any more
        for worker in workers:
            worker.stop()


class _ChildSink:
    """The `FrameSink` of a child's workers: every frame goes to the main process."""

    def __init__(self, conn, streams: list[StreamConfig], device: int):
        self._conn = conn
        self._send_lock = threading.Lock()
        self._index = {cfg.id: i for i, cfg in enumerate(streams)}
        self._live = [cfg.is_live for cfg in streams]
        self.credits = [threading.Semaphore(cfg.ring_size) for cfg in streams]
        self.slots = [_Slots(cfg.ring_size + EXTRA_SLOTS, device) for cfg in streams]
        self.workers: list[StreamWorker] = []

    def put(self, frame: Frame, timeout: float) -> bool:
        index = self._index[frame.stream_id]
        live = self._live[index]
        if not live and not self.credits[index].acquire(timeout=timeout):
            return False
        image, pixel_format = frame.image, frame.pixel_format
        if pixel_format == "nv12" and not isinstance(image, np.ndarray):  # NV12 in device memory
            payload = self.slots[index].ref(image, timeout=0.0 if live else timeout)
            if payload is None:
                if not live:
                    self.credits[index].release()
                return False
        else:
            payload = frame.image if pixel_format in ("rgb24", "nv12") else frame_to_rgb(frame)
            pixel_format = "rgb24" if pixel_format == "avframe" else pixel_format
        self.send(("frame", index, frame.seq, frame.pts_ns, frame.wall_ns, frame.width, frame.height, pixel_format,
                   payload))
        return True

    def end_stream(self, stream_id: str) -> None:
        index = self._index[stream_id]
        self.send(("end", index, self.workers[index].stats()))

    def send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                pass  # the main process is gone; the control loop stops the workers

    def close(self) -> None:
        with self._send_lock:
            self._conn.close()


class _Lease:
    """A slot the decoder writes a picture into (`_Slots.allocate`); it comes back by itself if the
    picture is dropped unsent (an fps cap, a stop), else when the main process has copied it."""

    __slots__ = ("__weakref__", "generation", "memory", "sent", "slot", "slot_bytes", "slots")

    def __init__(self, slots: _Slots, generation: int, slot: int, slot_bytes: int, memory: Any):
        self.slots, self.generation, self.slot, self.slot_bytes, self.memory = slots, generation, slot, slot_bytes, memory
        self.sent = False

    def __del__(self):
        if not self.sent:
            self.slots.free(self.generation, self.slot)


class _Slots:
    """One stream's device slots in the child: pictures wait in them until the main process copied them.

    NVDEC writes each picture straight into a slot (`allocate`); a picture that found none free is
    copied into one when it is sent (`ref`). A picture larger than the slots (a resolution change)
    starts a new pool; the old one is freed once its last slot has come back.
    """

    def __init__(self, count: int, device: int):
        self._count = count
        self._device = device
        self._cond = threading.Condition()
        self._generation = -1
        self._memory = None
        self._slot_bytes = 0
        self._free: list[int] = []
        self._retired: dict[int, list] = {}  # generation -> [memory, slots still out]
        self._handles: dict[int, bytes] = {}  # generation -> IPC handle, until a frame carries it
        self._leases: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # data pointer -> lease
        self._stream = None

    def allocate(self, rows: int, width: int) -> Any:
        """A `(rows, width) uint8` device array in a free slot for the decoder, or None when none is free."""
        import cupy  # noqa: PLC0415 - GPU stack

        with self._cond:
            self._fit(cupy, rows * width)
            if not self._free:
                return None
            lease = _Lease(self, self._generation, self._free.pop(), self._slot_bytes, self._memory)
        ptr = lease.memory.ptr + lease.slot * lease.slot_bytes
        memory = cupy.cuda.UnownedMemory(ptr, lease.slot_bytes, lease, self._device)
        self._leases[ptr] = lease
        return cupy.ndarray((rows, width), cupy.uint8, cupy.cuda.MemoryPointer(memory, 0))

    def ref(self, image: Any, timeout: float) -> SlotRef | None:
        """The slot that holds `image` for the main process: its own if the decoder wrote it into one,
        else a copy into a free one (waiting up to `timeout` s); None when none came free."""
        lease = self._leases.pop(image.data.ptr, None)
        if lease is not None:
            lease.sent = True
            generation, slot, slot_bytes = lease.generation, lease.slot, lease.slot_bytes
        else:
            import cupy  # noqa: PLC0415 - GPU stack

            with self._cond:
                self._fit(cupy, image.nbytes)
                if not self._free and not self._cond.wait_for(lambda: self._free, timeout):
                    return None
                slot = self._free.pop()
                generation, base, slot_bytes = self._generation, self._memory.ptr, self._slot_bytes
            runtime = cupy.cuda.runtime
            runtime.memcpyAsync(base + slot * slot_bytes, image.data.ptr, image.nbytes, runtime.memcpyDeviceToDevice,
                                self._stream.ptr)
            self._stream.synchronize()
        with self._cond:
            handle = self._handles.pop(generation, None)
        return SlotRef(generation, slot, slot_bytes, tuple(image.shape), handle)

    def _fit(self, cupy, nbytes: int) -> None:
        """Make sure the slots hold `nbytes` (lock held): a new pool when they do not."""
        if self._memory is not None and nbytes <= self._slot_bytes:
            return
        if self._memory is not None:
            out = self._count - len(self._free)
            if out:
                self._retired[self._generation] = [self._memory, out]
        with cupy.cuda.Device(self._device):
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
            self._memory = cupy.cuda.Memory(nbytes * self._count)  # cudaMalloc: IPC needs its own allocation
        self._generation += 1
        self._slot_bytes = nbytes
        self._free = list(range(self._count))
        self._handles[self._generation] = cupy.cuda.runtime.ipcGetMemHandle(self._memory.ptr)

    def free(self, generation: int, slot: int) -> None:
        with self._cond:
            if generation == self._generation:
                self._free.append(slot)
                self._cond.notify()
                return
            retired = self._retired.get(generation)
            if retired is not None:
                retired[1] -= 1
                if retired[1] == 0:
                    del self._retired[generation]
