"""Packet rings: each stream's recent compressed video packets, and event clips cut from them.

The decode side owns the packets, so it owns the clips too: a reader calls `PacketRings.tap(stream_id,
packet)` with every demuxed packet (before any bitstream filter; the packet's `stream` carries the
codec parameters), and whoever wants a clip (the media sink) calls `record_clip`. A clip runs from
a keyframe at or before `before_s` ahead of the event until `after_s` after it and is remuxed to
MP4 without re-encoding. Clip times use the packets' own clock; the event's `ts_ns` is used when it
lies inside the buffered window (frames carry the packet pts), otherwise the newest packet marks the
event.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from pipeline.types import pts_to_ns

log = logging.getLogger(__name__)

ClipDone = Callable[[Path, str | None], None]
"""`on_done(path, error)`: error is None when the clip was written, else what went wrong."""


@dataclass(slots=True)
class _Packet:
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    key: bool
    t_ns: int  # decode-order time (dts, else pts) in ns: rises packet by packet
    pts_ns: int  # display time (pts, else dts) in ns


@dataclass(slots=True)
class _Clip:
    path: Path
    template: Any  # av stream owned by the stream's template container
    end_ns: int
    packets: list[_Packet] = field(default_factory=list)
    shown_ns: int = -(2**63)  # latest display time among `packets`
    on_done: ClipDone | None = None

    def take(self, packet: _Packet) -> bool:
        """Add the next packet (decode order); False when the clip is complete without it.

        The clip ends before the first packet that opens a new display run (its pts is later than
        every pts so far) once the run so far reaches `end_ns`: cutting there leaves no frame
        missing and none that refers to a dropped frame, even with B-frames.
        """
        if packet.pts_ns > self.shown_ns and self.shown_ns >= self.end_ns:
            return False
        self.packets.append(packet)
        self.shown_ns = max(self.shown_ns, packet.pts_ns)
        return True


def remux_clip(path: Path, template: Any, packets: Sequence[_Packet]) -> None:
    """Write packets (decode order, starting at a keyframe) to an MP4 without re-encoding; the
    clip's timestamps start at 0. Written to `<path>.part` first, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    base = min(p.dts if p.dts is not None else p.pts for p in packets)
    with av.open(str(partial), "w", format="mp4") as out:
        stream = out.add_stream_from_template(template)
        for p in packets:
            packet = av.Packet(p.data)
            packet.stream = stream
            packet.time_base = p.time_base
            packet.pts = None if p.pts is None else p.pts - base
            packet.dts = None if p.dts is None else p.dts - base
            packet.duration = p.duration
            packet.is_keyframe = p.key
            out.mux(packet)
    os.replace(partial, path)


class _StreamClips:
    """One stream's packet ring (whole GOPs covering `keep_ns`) and its clips still collecting."""

    def __init__(self, stream_id: str, keep_ns: int):
        self.stream_id = stream_id
        self.keep_ns = keep_ns
        self.lock = threading.Lock()
        self.gops: deque[list[_Packet]] = deque()
        self.pending: list[_Clip] = []
        self.source: Any = None  # the demuxer's av stream the ring was filled from
        self.holder: Any = None  # our own container holding a copy of its codec parameters
        self.template: Any = None

    def adopt(self, source: Any) -> list[Any]:
        """A new input stream (first packet, reconnect): copy its parameters, restart the ring.
        Returns what must be finished first: pending clips, then the old holder to close."""
        finished = self.retire()
        self.source = source
        self.holder = av.open(io.BytesIO(), "w", format="mp4")
        self.template = self.holder.add_stream_from_template(source)
        return finished

    def retire(self) -> list[Any]:
        """Empty the ring; returns its pending clips, then its holder to close after them."""
        finished: list[Any] = [*self.pending, *([self.holder] if self.holder is not None else [])]
        self.pending, self.gops = [], deque()
        self.source = self.holder = self.template = None
        return finished

    def add(self, packet: _Packet) -> list[_Clip]:
        """Buffer one packet; returns the clips it completed."""
        if self.gops and packet.t_ns < self.gops[-1][-1].t_ns - 1_000_000_000:  # clock went back: file loop
            done, self.pending, self.gops = self.pending, [], deque()
            return done + self.add(packet)
        if packet.key:
            self.gops.append([packet])
        elif self.gops:
            self.gops[-1].append(packet)
        else:
            return []  # a ring always starts at a keyframe
        while len(self.gops) > 1 and self.gops[1][0].t_ns <= packet.t_ns - self.keep_ns:
            self.gops.popleft()
        done = [clip for clip in self.pending if not clip.take(packet)]
        self.pending = [c for c in self.pending if c not in done]
        return done

    def start(self, path: Path, ts_ns: int, before_ns: int, after_ns: int, on_done: ClipDone | None) -> _Clip | None:
        """Begin a clip for an event at `ts_ns`, pending until a packet passes its end (or it is
        complete already when the packets ran ahead); None when no packet of this stream was seen."""
        if not self.gops or self.template is None:
            return None
        oldest = self.gops[0][0].pts_ns
        newest = max(p.pts_ns for p in self.gops[-1])
        trigger = ts_ns if oldest <= ts_ns <= newest else newest
        start = 0
        for i, gop in enumerate(self.gops):
            if gop[0].pts_ns <= trigger - before_ns:
                start = i
        clip = _Clip(path, self.template, trigger + after_ns, on_done=on_done)
        complete = not all(clip.take(p) for gop in list(self.gops)[start:] for p in gop)
        if not complete:
            self.pending.append(clip)
        return clip


class PacketRings:
    """Per-stream packet rings of one process and the thread `clips` that writes clips from them.

    keep_s: seconds of packets kept per stream (whole GOPs, so up to one GOP more); it should be
    the longest `before_s` asked for plus slack for events that reach `record_clip` later than
    their packets reach `tap`. Larger tolerates slower consumers, costs memory (about bitrate x
    seconds per stream). queue_size: clips waiting for the writer; when full a clip is dropped and
    counted rather than blocking the decoder.
    """

    def __init__(self, keep_s: float, *, queue_size: int = 16):
        if keep_s < 0:
            raise ValueError(f"PacketRings: keep_s must be >= 0 seconds, got {keep_s}")
        self._keep_ns = int(keep_s * 1e9)
        self._streams: dict[str, _StreamClips] = {}
        self._lock = threading.Lock()  # guards `_streams`, `_retired` and starting the writer
        self._retired: list[Any] = []  # holders that did not fit the queue; closed in close()
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_clips, name="clips", daemon=True)
        self._counts_lock = threading.Lock()
        self._counts = {"clips_written": 0, "clips_dropped": 0, "errors": 0}

    def start(self) -> PacketRings:
        """Start the writer thread (also done on the first clip); idempotent."""
        with self._lock:
            if not self._writer.is_alive() and not self._stop.is_set():
                self._writer.start()
        return self

    def tap(self, stream_id: str, packet: av.Packet) -> None:
        """Buffer one demuxed packet of `stream_id` (called from its decode thread); never blocks.
        Non-video packets, empty packets and packets without timestamps are ignored."""
        if self._closed.is_set() or packet.size == 0 or packet.stream is None or packet.stream.type != "video":
            return
        ticks = packet.dts if packet.dts is not None else packet.pts
        if ticks is None:
            return  # raw elementary streams without timestamps cannot be clipped
        with self._lock:
            ring = self._streams.get(stream_id)
            if ring is None:
                ring = self._streams[stream_id] = _StreamClips(stream_id, self._keep_ns)
        time_base = packet.time_base or packet.stream.time_base
        shown = packet.pts if packet.pts is not None else ticks
        record = _Packet(bytes(packet), packet.pts, packet.dts, packet.duration or 0, time_base,
                         packet.is_keyframe, pts_to_ns(ticks, time_base), pts_to_ns(shown, time_base))
        with ring.lock:
            finished = ring.adopt(packet.stream) if packet.stream is not ring.source else []
            finished += ring.add(record)
            dropped = self._submit(finished)
        self._report_dropped(dropped)

    def record_clip(self, stream_id: str, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: ClipDone | None = None) -> bool:
        """Ask for a clip of `stream_id` around `ts_ns` (ns, the packets' clock) from a keyframe at or
        before `before_s` ahead of it until `after_s` after it, written to `path` (MP4).

        False when no packet of that stream is buffered (the caller counts a missed clip). Otherwise
        the clip is written now, when packets past its end arrive, or at `end_stream`/`close`, and
        `on_done(path, error_or_None)` is called once: from the writer thread, or from the thread
        that queued the clip when the writer's queue was full (error says so). A `before_s` longer
        than `keep_s` starts at the oldest buffered keyframe.
        """
        if self._closed.is_set():
            return False
        with self._lock:
            ring = self._streams.get(stream_id)
        if ring is None:
            return False
        with ring.lock:
            clip = ring.start(Path(path), ts_ns, int(before_s * 1e9), int(after_s * 1e9), on_done)
            dropped = self._submit([clip]) if clip is not None and clip not in ring.pending else []
        self._report_dropped(dropped)
        return clip is not None

    def end_stream(self, stream_id: str) -> None:
        """Write `stream_id`'s unfinished clips with the packets they have and forget the stream;
        a later packet of the same id starts a new ring."""
        with self._lock:
            ring = self._streams.pop(stream_id, None)
        if ring is None:
            return
        with ring.lock:
            dropped = self._submit(ring.retire())
        self._report_dropped(dropped)

    def close(self, timeout: float = 10.0) -> None:
        """Write every unfinished clip, stop the writer thread (waiting up to `timeout` s), close the
        stream templates. Later packets are ignored and later clips are refused (False)."""
        self._closed.set()
        for stream_id in list(self._streams):
            self.end_stream(stream_id)
        with self._lock:
            self._stop.set()
        if self._writer.is_alive():
            self._writer.join(timeout)
        if self._writer.is_alive():
            log.warning("clips: writer still busy after %.0f s; %d clips may be unfinished", timeout, self._jobs.qsize())
            return
        while not self._jobs.empty():  # queued by a tap that raced close() after the writer stopped
            self._finish(self._jobs.get_nowait())
        for holder in self._retired:
            holder.close()
        self._retired.clear()

    def stats(self) -> dict[str, int]:
        """clips_written, clips_dropped (the writer's queue was full), errors (clips that failed to write)."""
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    def _submit(self, items: list[Any]) -> list[_Clip]:
        """Queue clips (and retired templates, closed after the clips that use them) for the writer;
        called with the stream's lock held so that this order holds across threads. Never blocks;
        returns the clips that did not fit."""
        if not items:
            return []
        self.start()
        dropped = []
        for item in items:
            try:
                self._jobs.put_nowait(item)
            except queue.Full:
                if isinstance(item, _Clip):
                    dropped.append(item)
                else:
                    with self._lock:
                        self._retired.append(item)
        return dropped

    def _report_dropped(self, clips: list[_Clip]) -> None:
        for clip in clips:  # outside the stream's lock: on_done may take its own locks
            self._count("clips_dropped")
            log.warning("clips: writer queue full, dropping the clip %s", clip.path)
            self._done(clip, "dropped: the clip writer's queue was full")

    def _write_clips(self) -> None:
        while not (self._stop.is_set() and self._jobs.empty()):
            try:
                item = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            self._finish(item)

    def _finish(self, item: Any) -> None:
        if not isinstance(item, _Clip):
            item.close()  # the template container of a stream that was replaced or ended
            return
        try:
            remux_clip(item.path, item.template, item.packets)
        except (OSError, av.error.FFmpegError, ValueError) as exc:
            self._count("errors")
            log.error("clips: cannot write clip %s (%d packets): %s", item.path, len(item.packets), exc)
            self._done(item, f"cannot write clip {item.path}: {exc}")
            return
        self._count("clips_written")
        self._done(item, None)

    @staticmethod
    def _done(clip: _Clip, error: str | None) -> None:
        if clip.on_done is None:
            return
        try:
            clip.on_done(clip.path, error)
        except Exception:  # noqa: BLE001 - isolation boundary: a failing callback must not stop the writer
            log.exception("clips: on_done for %s failed", clip.path)
