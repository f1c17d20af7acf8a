"""Media sink: event snapshots (JPEG) and event clips (MP4, cut by the sources' packet rings).

Files, per event whose alert rule asks for them:
- `<directory>/<stream_id>/<event_id>.jpg`: the frame the event fired on; `<event_id>_crop.jpg`:
  the event's object (its tracked box, 10 % margin), when the frame has it.
- `<directory>/<stream_id>/<event_id>.mp4`: from a keyframe at or before `clip_before_s` ahead of
  the event until `clip_after_s` after it, without re-encoding.

Clips need the compressed packets, which only the decoder side sees, so the sink does not cut them:
it asks a `ClipRecorder` (`pipeline.sources.packets.PacketRings`) for each one and counts what the
recorder reports back.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from pipeline.config.models import AlertRule
from pipeline.config.outputs import MediaOutput
from pipeline.files import write_atomic
from pipeline.sinks.base import BaseSink, ClipRecorder
from pipeline.sinks.media_retention import MediaRetention
from pipeline.types import Event, FrameResult, frame_to_rgb

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


class MediaSink(BaseSink):
    """Snapshots and clips for events whose alert rule has `snapshot` / `clip` set.

    An event asks for them in its payload (`"snapshot": true`, `"clip": true`; alert events carry their
    rule's settings there); alerts: the configured rules, looked up by `event.rule` for an event whose
    payload does not say.
    clips: who cuts the clips (`PacketRings`, fed by the decode workers); None counts every clip
    asked for as missed. jpeg_qscale: 2 (best) .. 31 (smallest files).
    """

    name = "media"

    def __init__(self, config: MediaOutput, alerts: Sequence[AlertRule] = (), clips: ClipRecorder | None = None,
                 *, jpeg_qscale: int = 3):
        self.config = config
        self.directory = Path(config.directory).expanduser().absolute()  # events name their files by these paths
        self.clips = clips
        self.retention = MediaRetention(self.directory, config.retention_days)
        self.jpeg_qscale = jpeg_qscale
        self._rules = {rule.name: rule for rule in alerts}
        self._unrecorded: set[str] = set()  # streams already warned about: clips asked for, no recorder
        self._counts_lock = threading.Lock()  # on_done runs on the recorder's writer thread
        self.counts = {"snapshots": 0, "crops": 0, "snapshots_missed": 0, "clips": 0, "clips_missed": 0, "errors": 0}

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[key] += n

    def _wants(self, event: Event, what: str) -> bool:
        if what in event.payload:  # alert events carry their rule's wish (rules change while running)
            return bool(event.payload[what])
        rule = self._rules.get(event.rule) if event.kind == "alert" else None  # a zone may share a rule's name
        return bool(getattr(rule, what) if rule is not None else event.payload.get(what, False))

    # -- Sink protocol ----------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retention.start()

    def files_for(self, event: Event) -> dict[str, Path]:
        """The files this sink writes for `event`, one of a frame's, by role (`snapshot`, `clip`); the event
        names them before they exist. A clip the recorder cannot cut is missing (counted in `clips_missed`)."""
        paths = media_paths(self.directory, event.stream_id, event.event_id)
        files = {"snapshot": paths.snapshot} if self.config.snapshot and self._wants(event, "snapshot") else {}
        return {**files, "clip": paths.clip} if self._wants(event, "clip") else files

    def needs_picture(self, result: FrameResult) -> bool:
        return bool(result.events)  # a snapshot is taken of an event's frame only

    def on_frame(self, result: FrameResult) -> None:
        for event in result.events:
            files = self.files_for(event)
            if "snapshot" in files:
                self._snapshot(result, event, media_paths(self.directory, event.stream_id, event.event_id))
            if "clip" in files:
                self._request_clip(event, files["clip"])

    def on_events(self, stream_id: str, events: list[Event]) -> None:
        """Events without their frame (its picture was dropped to keep up with a live camera): their clips are
        cut all the same (from the stream's packets), their snapshots are counted as missed. Events that belong
        to no frame (a stream's end) name no files and get none."""
        for event in events:
            if event.snapshot is None and event.clip is None:
                continue
            files = self.files_for(event)
            if "snapshot" in files:
                self._count("snapshots_missed")
                log.warning("media: no snapshot of event %s: its frame was dropped (the media sink fell behind "
                            "camera '%s'; see its queue_size)", event.event_id, stream_id)
            if "clip" in files:
                self._request_clip(event, files["clip"])

    def on_stream_end(self, stream_id: str) -> None:
        """Nothing to flush: snapshots are written at once, clips belong to the recorder. A stream that
        comes again is warned about again."""
        self._unrecorded.discard(stream_id)

    def close(self) -> None:
        """Nothing to flush; clips still being cut are reported when the recorder closes."""
        self.retention.close()

    # -- clips ------------------------------------------------------------------------------------
    def _request_clip(self, event: Event, path: Path) -> None:
        if self.clips is None:
            self._count("clips_missed")
            if event.stream_id not in self._unrecorded:
                self._unrecorded.add(event.stream_id)
                log.warning("media: stream '%s' has events that ask for clips but no clip recorder is "
                            "configured; their clips are counted as missed", event.stream_id)
            return
        asked = self.clips.record_clip(event.stream_id, event.ts_ns, self.config.clip_before_s,
                                       self.config.clip_after_s, path, on_done=self._clip_done)
        if not asked:
            self._count("clips_missed")
            log.warning("media: no clip of event %s: the packets of stream '%s' do not hold its frame (gone before "
                        "the event came, or none kept: they are kept when an alert rule asks for clips or the media "
                        "sink has `clips: true`; streams without timestamps cannot be clipped)", event.event_id,
                        event.stream_id)

    def _clip_done(self, path: Path, error: str | None) -> None:
        """The recorder's report on one clip (called from its writer thread)."""
        if error is None:
            self._count("clips")
            return
        self._count("errors")
        log.error("media: clip %s not written: %s", path, error)

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot(self, result: FrameResult, event: Event, paths: MediaPaths) -> None:
        try:
            rgb = frame_to_rgb(result.frame)
            write_atomic(paths.snapshot, encode_jpeg(rgb, self.jpeg_qscale))
            self._count("snapshots")
            box = self._object_box(result, event)
            if box is not None:
                x0, y0, x1, y1 = box
                write_atomic(paths.crop, encode_jpeg(np.ascontiguousarray(rgb[y0:y1, x0:x1]), self.jpeg_qscale))
                self._count("crops")
        except (OSError, av.error.FFmpegError, ValueError) as exc:  # this snapshot only: its clip and the frame's
            self._count("errors")  # other events go on
            log.error("media: cannot write the snapshot of event %s to %s: %s", event.event_id, paths.snapshot, exc)

    @staticmethod
    def _object_box(result: FrameResult, event: Event) -> tuple[int, int, int, int] | None:
        """The event's object in this frame: its track's box, else a `xyxy` in the payload."""
        dets = result.tracks
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
            return {**self.counts, "deleted": self.retention.deleted}
