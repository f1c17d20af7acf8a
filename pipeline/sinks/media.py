"""Media sink: event snapshots (JPEG) and event clips (MP4 remuxed from the stream's own packets).

Files, per event whose alert rule asks for them:
- `<directory>/<stream_id>/<event_id>.jpg`: the frame the event fired on; `<event_id>_crop.jpg`:
  the event's object (its tracked box, 10 % margin), when the frame has it.
- `<directory>/<stream_id>/<event_id>.mp4`: from a keyframe at or before `clip_before_s` ahead of
  the event until `clip_after_s` after it, without re-encoding.

Clips need the compressed packets, which only the decoder side sees: the stream worker calls
`packet_tap(stream_id, packet)` with every demuxed video packet (before any bitstream filter);
the packet's `stream` carries the codec parameters. Clip times use the packets' own clock; the
event's `ts_ns` is used when it lies inside the buffered window (frames carry the packet pts),
otherwise the newest packet marks the event.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from pipeline.config.models import AlertRule, MediaOutput
from pipeline.errors import SinkError
from pipeline.types import Event, FrameResult, frame_to_rgb, pts_to_ns

log = logging.getLogger(__name__)


class MediaPaths(NamedTuple):
    snapshot: Path
    crop: Path
    clip: Path


def media_paths(directory: Path, stream_id: str, event_id: str) -> MediaPaths:
    """Where an event's files go (deterministic, so storage can link to them before they exist)."""
    base = Path(directory) / stream_id / event_id
    return MediaPaths(base.with_suffix(".jpg"), base.with_name(f"{event_id}_crop.jpg"), base.with_suffix(".mp4"))


# -- snapshots ------------------------------------------------------------------------------------
def encode_jpeg(rgb: np.ndarray, qscale: int = 3) -> bytes:
    """JPEG bytes of an `(H, W, 3) uint8` RGB image with PyAV's mjpeg encoder.

    qscale: 2 (best, largest) .. 31 (worst, smallest); 3 is visually lossless for snapshots.
    """
    height, width = rgb.shape[:2]
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.qmin = ctx.qmax = qscale
    picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(p) for p in ctx.encode(picture) + ctx.encode(None))


def crop_box(xyxy: Sequence[float], width: int, height: int, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) of a box grown by `margin` of its size, clipped to the image, with
    even width and height (4:2:0 JPEG); None when less than 2x2 pixels remain."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0, int(x0 - dx)), max(0, int(y0 - dy))
    right, bottom = min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy)))
    right -= (right - left) % 2
    bottom -= (bottom - top) % 2
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)


# -- clips ----------------------------------------------------------------------------------------
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

    def newest_ns(self) -> int | None:
        return self.gops[-1][-1].t_ns if self.gops else None

    def adopt(self, source: Any) -> list[Any]:
        """A new input stream (first packet, reconnect): copy its parameters, restart the ring.
        Returns what must be finished first: pending clips, then the old holder to close."""
        finished: list[Any] = [*self.pending]
        if self.holder is not None:
            finished.append(self.holder)
        self.pending, self.gops = [], deque()
        self.source = source
        self.holder = av.open(io.BytesIO(), "w", format="mp4")
        self.template = self.holder.add_stream_from_template(source)
        return finished

    def add(self, packet: _Packet) -> list[_Clip]:
        """Buffer one packet; returns the clips it completed."""
        newest = self.newest_ns()
        if newest is not None and packet.t_ns < newest - 1_000_000_000:  # clock went back: file loop
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

    def start(self, path: Path, ts_ns: int, before_ns: int, after_ns: int) -> _Clip | None:
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
        clip = _Clip(path, self.template, trigger + after_ns)
        complete = not all(clip.take(p) for gop in list(self.gops)[start:] for p in gop)
        if not complete:
            self.pending.append(clip)
        return clip


class MediaSink:
    """Snapshots and clips for events whose alert rule has `snapshot` / `clip` set.

    alerts: the configured rules, looked up by `event.rule`; an event of an unknown rule is
    treated as asking for neither (unless its payload says `"snapshot": true` / `"clip": true`).
    jpeg_qscale: 2 (best) .. 31 (smallest files). ring_slack_s: extra seconds of packets kept
    beyond `clip_before_s` because events reach the sinks later than packets reach the tap; larger
    tolerates slower sinks, costs memory (about bitrate x seconds per stream).
    Clips are written by a background thread `media:clips` (queue of `clip_queue`; when it is full
    a clip is dropped and counted rather than blocking the decoder).
    """

    name = "media"

    def __init__(self, config: MediaOutput, alerts: Sequence[AlertRule] = (), *, jpeg_qscale: int = 3,
                 ring_slack_s: float = 5.0, clip_queue: int = 16):
        self.config = config
        self.directory = Path(config.directory)
        self.jpeg_qscale = jpeg_qscale
        self._rules = {rule.name: rule for rule in alerts}
        self._before_ns = int(config.clip_before_s * 1e9)
        self._after_ns = int(config.clip_after_s * 1e9)
        self._keep_ns = int((config.clip_before_s + ring_slack_s) * 1e9)
        self._streams: dict[str, _StreamClips] = {}
        self._streams_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue(maxsize=clip_queue)
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_clips, name="media:clips", daemon=True)
        self._counts_lock = threading.Lock()
        self.counts = {"snapshots": 0, "crops": 0, "clips": 0, "clips_dropped": 0, "clips_missed": 0, "errors": 0}

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[key] += n

    def _wants(self, event: Event, what: str) -> bool:
        rule = self._rules.get(event.rule)
        return bool(getattr(rule, what) if rule is not None else event.payload.get(what, False))

    def _stream(self, stream_id: str) -> _StreamClips:
        with self._streams_lock:
            if stream_id not in self._streams:
                self._streams[stream_id] = _StreamClips(stream_id, self._keep_ns)
            return self._streams[stream_id]

    # -- Sink protocol ----------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._writer.is_alive():
            self._writer.start()

    def on_frame(self, result: FrameResult) -> None:
        for event in result.events:
            paths = media_paths(self.directory, event.stream_id, event.event_id)
            if self.config.snapshot and self._wants(event, "snapshot"):
                self._snapshot(result, event, paths)
            if self._wants(event, "clip"):
                self._start_clip(event, paths.clip)

    def on_stream_end(self, stream_id: str) -> None:
        """Write this stream's unfinished clips with the packets they have."""
        clips = self._stream(stream_id)
        with clips.lock:
            done, clips.pending = clips.pending, []
            self._submit(done)

    def close(self, timeout: float = 10.0) -> None:
        """Write every unfinished clip, stop the writer thread, release the stream templates."""
        for stream_id in list(self._streams):
            self.on_stream_end(stream_id)
        self._stop.set()
        if self._writer.is_alive():
            self._writer.join(timeout)
        if self._writer.is_alive():
            log.warning("media: clip writer still busy after %.0f s; %d clips may be unfinished", timeout, self._jobs.qsize())
            return
        for clips in self._streams.values():
            if clips.holder is not None:
                clips.holder.close()
                clips.holder = None

    # -- packets ----------------------------------------------------------------------------------
    def packet_tap(self, stream_id: str, packet: av.Packet) -> None:
        """Called by the stream worker (decode thread) with each demuxed packet; never blocks."""
        if packet.size == 0 or packet.stream is None or packet.stream.type != "video":
            return
        ticks = packet.dts if packet.dts is not None else packet.pts
        if ticks is None:
            return  # raw elementary streams without timestamps cannot be clipped
        clips = self._stream(stream_id)
        time_base = packet.time_base or packet.stream.time_base
        shown = packet.pts if packet.pts is not None else ticks
        record = _Packet(bytes(packet), packet.pts, packet.dts, packet.duration or 0, time_base,
                         packet.is_keyframe, pts_to_ns(ticks, time_base), pts_to_ns(shown, time_base))
        with clips.lock:
            finished = clips.adopt(packet.stream) if packet.stream is not clips.source else []
            finished += clips.add(record)
            self._submit(finished)

    def _start_clip(self, event: Event, path: Path) -> None:
        clips = self._stream(event.stream_id)
        with clips.lock:
            clip = clips.start(path, event.ts_ns, self._before_ns, self._after_ns)
            if clip is not None and clip not in clips.pending:
                self._submit([clip])
        if clip is None:
            self._count("clips_missed")
            log.warning("media: no packets from stream '%s' for the clip of event %s; is the worker's "
                        "packet_tap connected to MediaSink.packet_tap?", event.stream_id, event.event_id)

    def _submit(self, items: list[Any]) -> None:
        """Queue clips (and retired templates, closed after the clips that use them) for the writer;
        called with the stream's lock held so that this order holds across threads. Never blocks."""
        for item in items:
            try:
                self._jobs.put_nowait(item)
            except queue.Full:
                if isinstance(item, _Clip):
                    self._count("clips_dropped")
                    log.warning("media: clip queue full, dropping the clip %s", item.path)

    def _write_clips(self) -> None:
        while not (self._stop.is_set() and self._jobs.empty()):
            try:
                item = self._jobs.get(timeout=0.1)
            except queue.Empty:
                continue
            if not isinstance(item, _Clip):
                item.close()  # the template container of a stream that was replaced
                continue
            try:
                remux_clip(item.path, item.template, item.packets)
                self._count("clips")
            except (OSError, av.error.FFmpegError, ValueError) as exc:
                self._count("errors")
                log.error("media: cannot write clip %s (%d packets): %s", item.path, len(item.packets), exc)

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot(self, result: FrameResult, event: Event, paths: MediaPaths) -> None:
        try:
            rgb = frame_to_rgb(result.frame)
            _write_atomic(paths.snapshot, encode_jpeg(rgb, self.jpeg_qscale))
            self._count("snapshots")
            box = self._object_box(result, event)
            if box is not None:
                x0, y0, x1, y1 = box
                _write_atomic(paths.crop, encode_jpeg(np.ascontiguousarray(rgb[y0:y1, x0:x1]), self.jpeg_qscale))
                self._count("crops")
        except (OSError, av.error.FFmpegError, ValueError) as exc:
            self._count("errors")
            raise SinkError(f"cannot write the snapshot of event {event.event_id} to {paths.snapshot}: {exc}") from exc

    @staticmethod
    def _object_box(result: FrameResult, event: Event) -> tuple[int, int, int, int] | None:
        """The event's object in this frame: its track's box, else a `xyxy` in the payload."""
        dets = result.detections
        rows = np.flatnonzero(dets.track_id == event.track_id) if event.track_id >= 0 else []
        if len(rows):
            xyxy = dets.xyxy[rows[0]]
        elif "xyxy" in event.payload:
            xyxy = event.payload["xyxy"]
        else:
            return None
        return crop_box(xyxy, result.frame.width, result.frame.height)

    def stats(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self.counts)
