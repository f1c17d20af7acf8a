"""The types that cross stage boundaries: Frame, FrameBatch, Detections, Run, Event, Moment, FrameResult.

Timestamps are integer nanoseconds from the decoder on; never floats.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

PixelFormat = Literal["rgb24", "nv12", "avframe"]

PTS_UNKNOWN = -1
"""`pts_to_ns` of a missing timestamp; a reader fills in a synthetic one before a `Frame` is made."""


def pts_to_ns(pts: int | None, time_base: Fraction | None) -> int:
    """`pts` ticks of `time_base` seconds as integer nanoseconds, rounded half up: exact, no floats.

    The one conversion from a container's clock to the pipeline's; `PTS_UNKNOWN` when either is missing.
    Frame `i` at `rate` frames/s is `pts_to_ns(i, 1 / rate)`.
    """
    if pts is None or time_base is None:
        return PTS_UNKNOWN
    num = pts * time_base.numerator * 1_000_000_000
    den = time_base.denominator
    return (num + den // 2) // den


def array_module(a: Any):
    """numpy or cupy, whichever owns `a` (cupy is imported only if it is already loaded)."""
    if isinstance(a, np.ndarray):
        return np
    import cupy  # noqa: PLC0415 - only reached for device arrays

    return cupy.get_array_module(a)


@dataclass(slots=True)
class Frame:
    """One decoded picture of one stream.

    image: host `(H, W, 3) uint8` RGB (`pixel_format="rgb24"`), device NV12 `(H*3/2, W) uint8`
    (`pixel_format="nv12"`), or the CPU decoder's own `av.VideoFrame` (`pixel_format="avframe"`),
    converted once, straight to the model's size, by preprocessing; `frame_to_rgb` gives any of
    them as host RGB; None in the `on_frame` of a sink that needs no picture (`Sink.needs_picture`).
    `seq` counts the frames handed on per stream from 0; a gap means frames were dropped.
    `pts_ns` is on the stream's own clock; `wall_ns` is the host's `time.time_ns()` at capture.
    Where the picture is in its source: `index`, its 0-based position in presentation order since the source
    began, counting every decoded picture (those an `fps` cap skips too: a capped stream's frames keep their
    source numbers); `epoch`, which reading of the source that is: 0, then one more for each pass of a looped
    file and each reconnection of a live stream, where `index` starts again at 0. (-1, 0): not read from a
    source (a warm-up or calibration picture).
    """

    stream_id: str
    seq: int
    pts_ns: int
    wall_ns: int
    image: Any
    width: int
    height: int
    pixel_format: PixelFormat = "rgb24"
    index: int = -1
    epoch: int = 0


def frame_to_rgb(frame: Frame) -> np.ndarray:
    """The frame's picture as host `(H, W, 3) uint8` RGB, whatever form the decoder left it in."""
    image = frame.image
    if frame.pixel_format == "avframe":
        return image.to_ndarray(format="rgb24")
    if frame.pixel_format == "nv12":
        import av  # noqa: PLC0415

        host = image.get() if hasattr(image, "get") else image  # cupy -> numpy
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(host), format="nv12").to_ndarray(format="rgb24")
    return np.ascontiguousarray(image)


@dataclass(slots=True)
class FrameBatch:
    """The frames of one batch, in row order, and the lane that produced it.

    `scale (B,) float32` and `pad (B, 2) float32` (x, y) are filled by preprocessing: a model
    coordinate maps back to source pixels as `(model - pad) / scale`.
    """

    frames: list[Frame]
    lane: str
    formed_ns: int = 0
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    pad: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.frames)


_COLUMNS = {
    "xyxy": (np.float32, (4,)),
    "score": (np.float32, ()),
    "class_id": (np.int32, ()),
    "frame_idx": (np.int32, ()),
    "track_id": (np.int64, ()),
}


_RESERVED = {*_COLUMNS, "class_name", "frame", "seq"}
"""Names an attribute may not take: the columns, and what outputs write beside them."""


class Detections:
    """Struct of arrays, all of length N, all on one device (numpy or cupy).

    xyxy (N,4) float32 source pixels; score (N,) float32; class_id (N,) int32;
    frame_idx (N,) int32 row in the batch; track_id (N,) int64, -1 before tracking.
    attributes: further named columns a stage added (`add_attribute`), each (N, ...).
    """

    __slots__ = (*_COLUMNS, "attributes")

    def __init__(self, xyxy, score, class_id, frame_idx=None, track_id=None):
        xp = array_module(xyxy)
        n = len(score)
        if frame_idx is None:
            frame_idx = xp.zeros(n, np.int32)
        if track_id is None:
            track_id = xp.full(n, -1, np.int64)
        values = dict(xyxy=xyxy, score=score, class_id=class_id, frame_idx=frame_idx, track_id=track_id)
        for name, (dtype, tail) in _COLUMNS.items():
            arr = xp.asarray(values[name], dtype=dtype)
            if tuple(arr.shape) != (n, *tail):
                raise ValueError(f"Detections.{name} must have shape {(n, *tail)}, got {tuple(arr.shape)}")
            setattr(self, name, arr)
        self.attributes: dict[str, Any] = {}

    def add_attribute(self, name: str, values) -> None:
        """Add a named column, one value per row (e.g. a plate number or a colour from a `stages:` plugin)."""
        if name in _RESERVED:
            raise ValueError(f"Detections attribute '{name}' would replace a column; choose another name")
        column = array_module(self.xyxy).asarray(values)
        if column.shape[:1] != (len(self),):
            raise ValueError(f"Detections attribute '{name}' needs {len(self)} rows, got shape {tuple(column.shape)}")
        self.attributes[name] = column

    @classmethod
    def empty(cls, xp=np) -> "Detections":
        return cls(xp.zeros((0, 4), np.float32), xp.zeros(0, np.float32), xp.zeros(0, np.int32))

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        if not parts:
            return cls.empty()
        xp = array_module(parts[0].xyxy)
        joined = cls(*(xp.concatenate([getattr(p, c) for p in parts]) for c in _COLUMNS))
        shared = set.intersection(*(set(p.attributes) for p in parts))  # a column some parts lack has no value there
        joined.attributes = {name: xp.concatenate([p.attributes[name] for p in parts]) for name in sorted(shared)}
        return joined

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def __getitem__(self, index) -> "Detections":
        """Rows selected by a boolean mask, an index array or a slice (attributes too)."""
        selected = Detections(*(getattr(self, c)[index] for c in _COLUMNS))
        selected.attributes = {name: column[index] for name, column in self.attributes.items()}
        return selected

    def rows(self, start: int, stop: int) -> "Detections":
        """Rows `start` to `stop` as views, without checking again what was checked when these were made
        (the per-frame split of a batch's detections, thousands of times a second)."""
        part = object.__new__(Detections)
        for name in _COLUMNS:
            setattr(part, name, getattr(self, name)[start:stop])
        part.attributes = {name: column[start:stop] for name, column in self.attributes.items()}
        return part

    def for_frame(self, row: int) -> "Detections":
        return self[self.frame_idx == row]

    def to_host(self) -> "Detections":
        if isinstance(self.xyxy, np.ndarray):
            return self
        host = Detections(*(getattr(self, c).get() for c in _COLUMNS))
        host.attributes = {name: column.get() for name, column in self.attributes.items()}
        return host

    def __repr__(self) -> str:
        return f"Detections(n={len(self)})"


def class_name(class_names: list[str], class_id: int) -> str:
    """The name of `class_id`, or its number as text when the model knows no name for it."""
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def class_ids(wanted: list[str], class_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """(K,) int32 ids of the class names `wanted`, in their order, and those of `wanted` that name no class. A name
    several ids share (a DETR's 91 COCO names repeat "N/A" at every gap id) gives them all, so a filter, zone or
    rule naming it keeps the boxes of each."""
    ids: dict[str, list[int]] = {}
    for class_id, name in enumerate(class_names):
        ids.setdefault(name, []).append(class_id)
    return (np.array([i for name in wanted for i in ids.get(name, ())], np.int32),
            [name for name in wanted if name not in ids])


@dataclass(frozen=True, slots=True)
class Run:
    """One start of the pipeline (`pipeline.runtime.runs.new_run`). run_id: unique across starts and
    instances, sorts by start time. config_hash: which config it ran. version: streamweave's.
    started_ns: host time (`time.time_ns()`). instance: the instance that ran it (`runtime.instance`)."""

    run_id: str
    config_hash: str
    version: str
    started_ns: int
    instance: str = ""


def track_uid(run_id: str, track_id: int) -> str:
    """A track's identity beyond its run: track ids start over at every run, run ids never repeat.
    `track_id` -1 (an event about no single track, e.g. occupancy) gives the run's "no track" uid."""
    return f"{run_id}/{int(track_id)}"


def make_event_id(stream_id: str, rule: str, track_uid: str, wall_ns: int) -> str:
    """The one definition of an event's id: a stable hash (SHA-1, 24 hex digits) of the stream id, the rule
    (`kind:name`), the track's uid (`track_uid`) and the wall-clock capture time (ns) of the frame the
    event was decided on. The same event always has the same id, so a replay after a crash is
    recognised downstream; a new event never collides with an old one, as its run id is new."""
    key = f"{stream_id}|{rule}|{track_uid}|{int(wall_ns)}".encode()
    return hashlib.sha1(key).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Event:
    """Something a rule decided happened. Delivery is at least once; de-duplicate by `event_id`.

    Made by `Moment.event` (which computes `event_id`). `ts_ns`: when it happened on the stream's own
    clock (pts); `wall_ns`: the host's capture time of the frame it was decided on; `run_id`: the run
    that decided it. The pipeline names the rest before the event leaves its stream's stages:
    `class_name` (the model's name of `class_id`; None when the event is about no class), `snapshot` and
    `clip` (where a media sink writes them, known before they are written; None when none does) and
    `instance` (the instance whose run decided it, `runtime.instance`; None in events stored before it existed).
    The id does not depend on the instance: the same event has the same id wherever its camera runs.
    """

    event_id: str
    run_id: str
    stream_id: str
    rule: str
    kind: str
    track_id: int
    class_id: int
    ts_ns: int
    wall_ns: int
    payload: dict = field(default_factory=dict)
    class_name: str | None = None
    snapshot: str | None = None
    clip: str | None = None
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class Moment:
    """A frame's capture in one run: what every event is made from (`FrameResult.moment`)."""

    run_id: str
    stream_id: str
    pts_ns: int
    wall_ns: int

    def event(self, rule: str, kind: str, track_id: int, class_id: int, payload: dict,
              ts_ns: int | None = None) -> Event:
        """An Event of `kind` by `rule` about `track_id` (-1: none) at this moment, its id from `make_event_id`.
        ts_ns: when it happened on the stream's clock, if earlier than this frame (a lost track's exit)."""
        event_id = make_event_id(self.stream_id, f"{kind}:{rule}", track_uid(self.run_id, track_id), self.wall_ns)
        return Event(event_id, self.run_id, self.stream_id, rule, kind, int(track_id), int(class_id),
                     int(self.pts_ns if ts_ns is None else ts_ns), int(self.wall_ns), payload)


@dataclass(slots=True)
class FrameResult:
    """What the sinks of one stream see, in frame order: the frame, its detections, its tracks, its events,
    and the run it belongs to. Stages make events with `result.moment.event(...)`.

    detections: what the detector found in this frame, its boxes and scores as it gave them; the tracker only
    sets `track_id` on the rows it matched to a reported track (-1 on the others). Never a prediction.
    tracks: the tracker's rows (host), one per track it reports on this frame: a matched track with its
    Kalman-corrected box and its detection's score and class, then each track lost for at most
    `tracker.coast_frames` frames with its predicted box and score 0 (`coasted()` tells them apart).
    Empty without a tracker.
    ended_tracks: the ids (K,) int64 of the tracks the tracker gave up on this frame (unseen for more than
    `tracker.max_lost_frames` frames, or all of them when the stream restarted): an id not in it may still be found
    again, one in it never will. None without a tracker.
    """

    frame: Frame
    detections: Detections
    events: list[Event] = field(default_factory=list)
    run_id: str = field(kw_only=True)
    tracks: Detections = field(default_factory=Detections.empty, kw_only=True)
    ended_tracks: np.ndarray | None = field(default=None, kw_only=True)

    @property
    def moment(self) -> Moment:
        return Moment(self.run_id, self.frame.stream_id, self.frame.pts_ns, self.frame.wall_ns)

    def coasted(self) -> np.ndarray:
        """(len(tracks),) bool: True where a track row is a prediction, its track matched to no detection of
        this frame."""
        if not len(self.tracks):
            return np.zeros(0, bool)
        return ~np.isin(self.tracks.to_host().track_id, self.detections.to_host().track_id)
