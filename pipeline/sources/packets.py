"""Packet rings: each stream's recent compressed video packets, and event clips cut from them.

The decode side owns the packets, so it owns the clips too: a reader calls `PacketRings.tap(stream_id,
packet)` with every demuxed packet (before any bitstream filter; the packet's `stream` carries the
codec parameters), and whoever wants a clip (the media sink) calls `record_clip`. A clip runs from
a keyframe at or before `before_s` ahead of the event until `after_s` after it and is remuxed to
MP4 without re-encoding.

Events are on the stream's joined timeline (`pipeline.sources.timeline`), packets on their own clock,
which starts again with every loop or reconnect: the stream's worker says where each pass lies
(`align`, `end_pass`). A clip is cut only while the event's own frame is buffered; an event
that comes after its packets left the ring, or from an earlier pass, gets none, never another moment's.
"""
from __future__ import annotations

import io
import logging
import queue
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from pipeline.sources.clip import Clip, ClipDone, Packet, remux_clip
from pipeline.types import pts_to_ns

log = logging.getLogger(__name__)

CLOCK_SLACK_NS = 1_000_000_000
"""How far past the newest packet an event may lie and still be on the packets' clock (a frame's timestamp can be
nudged past its packet's: repeated or missing timestamps), and how far back a packet's clock may step before it
counts as restarted. Beyond it is another clock: no clip."""


class _StreamClips:
    """One stream's packet ring (whole GOPs covering `keep_ns`, of one pass) and its clips still collecting.
    offset_ns: event time minus packet time in this pass; None until `align` says (with its first frame), and
    after the packets' clock jumps back within the pass."""

    def __init__(self, stream_id: str, keep_ns: int):
        self.stream_id = stream_id
        self.keep_ns = keep_ns
        self.lock = threading.Lock()
        self.gops: deque[list[Packet]] = deque()
        self.pending: list[Clip] = []
        self.source: Any = None  # the demuxer's av stream the ring was filled from
        self.holder: Any = None  # our own container holding a copy of its codec parameters
        self.template: Any = None
        self.offset_ns: int | None = None
        self.ended = False  # the pass ended: no packet will complete a clip; the next one begins a new pass

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

    def end_pass(self) -> list[Clip]:
        """The pass ended: returns its pending clips, complete with what they have."""
        done, self.pending, self.ended = self.pending, [], True
        return done

    def add(self, packet: av.Packet, time_base: Fraction) -> list[Clip]:
        """Buffer one packet; returns the clips it completed."""
        done: list[Clip] = []
        if self.ended:  # a new pass, placed on the timeline once its first frame is (`align`)
            self.gops, self.ended, self.offset_ns = deque(), False, None
        record = self._record(packet, time_base)
        if self.gops and record.t_ns < self.gops[-1][-1].t_ns - CLOCK_SLACK_NS:  # the clock went back: its events'
            # place on the stream's timeline is the reader's guess, so no event is clipped here until the next pass
            done, self.pending, self.gops, self.offset_ns = done + self.pending, [], deque(), None
        if record.key:
            self.gops.append([record])
        elif self.gops:
            self.gops[-1].append(record)
        else:
            return done  # a ring always starts at a keyframe
        while len(self.gops) > 1 and self.gops[1][0].t_ns <= record.t_ns - self.keep_ns:
            self.gops.popleft()
        completed = [clip for clip in self.pending if not clip.take(record)]
        self.pending = [c for c in self.pending if c not in completed]
        return done + completed

    def _record(self, packet: av.Packet, time_base: Fraction) -> Packet:
        """The ring's copy of `packet`. One without any timestamp (FFmpeg gives an RTSP connection's first
        packet none) is placed after the packet before it, or at 0 at the start of a pass, where the reader
        puts a frame without one."""
        pts, dts = packet.pts, packet.dts
        if pts is None and dts is None:
            last = self.gops[-1][-1] if self.gops else None
            pts = dts = 0 if last is None else (last.pts if last.dts is None else last.dts) + max(last.duration, 1)
        ticks = dts if dts is not None else pts
        shown = pts if pts is not None else ticks
        return Packet(bytes(packet), pts, dts, packet.duration or 0, time_base, packet.is_keyframe,
                       pts_to_ns(ticks, time_base), pts_to_ns(shown, time_base))

    def start(self, path: Path, ts_ns: int, before_ns: int, after_ns: int, on_done: ClipDone | None) -> Clip | str:
        """Begin a clip for an event at `ts_ns` (the stream's timeline), pending until a packet passes its end (or
        complete already when the packets ran ahead, or the pass ended); when the event's frame is not buffered,
        why there is no clip. A clip whose `before_ns` reaches past the ring starts at its oldest keyframe."""
        if self.offset_ns is None:
            return "the event is from before the packets restarted (a loop, a reconnect, their clock jumping back)"
        moment = ts_ns - self.offset_ns
        oldest = self.gops[0][0].pts_ns
        newest = max(p.pts_ns for p in self.gops[-1])
        if moment < oldest:
            return (f"its packets are gone (the ring keeps {self.keep_ns / 1e9:g} s of the current pass): the event at "
                    f"{ts_ns / 1e9:.2f} s came after the ring moved on to {(oldest + self.offset_ns) / 1e9:.2f} s")
        if moment > newest + CLOCK_SLACK_NS:
            return (f"the event at {ts_ns / 1e9:.2f} s is not on the stream's clock (its newest packet is at "
                    f"{(newest + self.offset_ns) / 1e9:.2f} s)")
        start = 0
        for i, gop in enumerate(self.gops):
            if gop[0].pts_ns <= moment - before_ns:
                start = i
        clip = Clip(path, self.template, moment + after_ns, on_done=on_done)
        wants_more = all(clip.take(p) for gop in list(self.gops)[start:] for p in gop)
        if wants_more and not self.ended:
            self.pending.append(clip)
        return clip


WRITER_FULL = "the clip writer's queue was full"


class PacketRings:
    """Per-stream packet rings of one process and the thread `clips` that writes clips from them.

    keep_s: seconds of packets kept per stream (whole GOPs, so up to one GOP more); it should be
    the longest `before_s` asked for plus slack for events that reach `record_clip` later than
    their packets reach `tap`. Larger tolerates slower consumers, costs memory (about bitrate x
    seconds per stream). queue_size: clips waiting for the writer, and clips of one stream waiting for their
    packets; a clip beyond either is dropped and counted rather than blocking the decoder or holding packets
    without bound. The clips a pass's or a stream's end completes are all queued (at most queue_size a
    stream): their packets are held already, and no decoder waits.
    """

    def __init__(self, keep_s: float, *, queue_size: int = 16):
        if keep_s < 0:
            raise ValueError(f"PacketRings: keep_s must be >= 0 seconds, got {keep_s}")
        self._keep_ns = int(keep_s * 1e9)
        self._streams: dict[str, _StreamClips] = {}
        self._lock = threading.Lock()  # guards `_streams` and starting the writer
        self._jobs: queue.Queue = queue.Queue()
        self._queue_size = queue_size
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
        Non-video packets and empty packets are ignored."""
        if self._closed.is_set() or packet.size == 0 or packet.stream is None or packet.stream.type != "video":
            return
        ring = self._ring(stream_id)
        time_base = packet.time_base or packet.stream.time_base
        with ring.lock:
            finished = ring.adopt(packet.stream) if packet.stream is not ring.source else []
            finished += ring.add(packet, time_base)
            dropped = self._submit(finished)
        self._report_dropped(dropped)

    def align(self, stream_id: str, offset_ns: int) -> None:
        """The current pass's frames are at their packets' time plus `offset_ns` on the stream's timeline (its
        `Timeline` says so with each pass's first frame). No clip is cut before a pass is aligned: until then an
        event may be of an earlier pass, whose packets are gone."""
        ring = self._ring(stream_id)
        with ring.lock:
            ring.offset_ns = offset_ns

    def end_pass(self, stream_id: str) -> None:
        """The stream's pass ended (a file's end, a camera gone): write its pending clips with what they have, and
        clips asked for later at once, instead of waiting for packets that may never come. Its packets stay for
        late events until the next pass's first packet, which begins a new ring."""
        ring = self._ring(stream_id, create=False)
        if ring is None:
            return
        with ring.lock:
            self._submit(ring.end_pass(), bounded=False)

    def record_clip(self, stream_id: str, ts_ns: int, before_s: float, after_s: float, path: Path,
                    on_done: ClipDone | None = None) -> bool:
        """Ask for a clip of `stream_id` around `ts_ns` (ns, the stream's timeline: the event's frame's
        `pts_ns`) from a keyframe at or before `before_s` ahead of it until `after_s` after it, written to
        `path` (MP4).

        False when the event's frame is not among the stream's buffered packets (none yet, gone from the
        ring, or of an earlier pass; logged): the caller counts a missed clip. Otherwise the clip is written
        now, when packets past its end arrive, or when the pass ends (`end_pass`, `end_stream`, `close`),
        and `on_done(path, error_or_None)` is called once: from the writer thread, or from the thread that
        dropped the clip (`queue_size`; error says so). A `before_s` reaching past the ring starts at the oldest
        buffered keyframe.
        """
        if self._closed.is_set():
            return False
        ring = self._ring(stream_id, create=False)
        if ring is None:
            return False
        with ring.lock:
            if not ring.gops or ring.template is None:
                return False
            clip = ring.start(Path(path), ts_ns, int(before_s * 1e9), int(after_s * 1e9), on_done)
            missed = isinstance(clip, str)
            why, dropped = WRITER_FULL, []
            if clip in ring.pending and len(ring.pending) > self._queue_size:  # at most queue_size wait for packets
                why, dropped = f"stream '{stream_id}' has {self._queue_size} clips waiting already", [ring.pending.pop()]
            elif not missed and clip not in ring.pending:
                dropped = self._submit([clip])
        self._report_dropped(dropped, why)
        if missed:
            log.warning("clips: no clip %s of stream '%s': %s", path, stream_id, clip)
        return not missed

    def end_stream(self, stream_id: str) -> None:
        """Write `stream_id`'s unfinished clips with the packets they have and forget the stream;
        a later packet of the same id starts a new ring."""
        with self._lock:
            ring = self._streams.pop(stream_id, None)
        if ring is None:
            return
        with ring.lock:
            self._submit(ring.retire(), bounded=False)

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
            log.warning("clips: writer still busy after %.0f s; %d clips are not written", timeout, self._jobs.qsize())
            self._give_up_queued()
            return
        while not self._jobs.empty():  # queued by a tap that raced close() after the writer stopped
            self._finish(self._jobs.get_nowait())

    def _ring(self, stream_id: str, create: bool = True) -> _StreamClips | None:
        with self._lock:
            if create and stream_id not in self._streams:
                self._streams[stream_id] = _StreamClips(stream_id, self._keep_ns)
            return self._streams.get(stream_id)

    def stats(self) -> dict[str, int]:
        """clips_written, clips_dropped (the writer's queue was full), errors (clips that failed to write)."""
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    def _submit(self, items: list[Any], bounded: bool = True) -> list[Clip]:
        """Queue clips (and retired templates, closed after the clips that use them) for the writer;
        called with the stream's lock held so that this order holds across threads. Never blocks;
        returns the clips that did not fit (`bounded`: at most `queue_size` wait)."""
        if not items:
            return []
        self.start()
        dropped = []
        for item in items:  # a template (closed after its clips) is small: always queued
            if not bounded or not isinstance(item, Clip) or self._jobs.qsize() < self._queue_size:
                self._jobs.put(item)
            else:
                dropped.append(item)
        return dropped

    def _give_up_queued(self) -> None:
        """At a close that timed out: the clips still queued are reported as not written (the process may end)."""
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Clip):
                self._count("errors")
                self._done(item, f"not written: the clip writer was still busy at shutdown ({item.path})")

    def _report_dropped(self, clips: list[Clip], why: str = WRITER_FULL) -> None:
        for clip in clips:  # outside the stream's lock: on_done may take its own locks
            self._count("clips_dropped")
            log.warning("clips: %s, dropping the clip %s", why, clip.path)
            self._done(clip, f"dropped: {why}")

    def _write_clips(self) -> None:
        while not (self._stop.is_set() and self._jobs.empty()):
            try:
                item = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            self._finish(item)

    def _finish(self, item: Any) -> None:
        if not isinstance(item, Clip):
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
    def _done(clip: Clip, error: str | None) -> None:
        if clip.on_done is None:
            return
        try:
            clip.on_done(clip.path, error)
        except Exception:  # noqa: BLE001 - isolation boundary: a failing callback must not stop the writer
            log.exception("clips: on_done for %s failed", clip.path)
