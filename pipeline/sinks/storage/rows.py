"""Turning FrameResults into table rows, and merging many frames' rows into one transaction's worth."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.types import Event, FrameResult, Run, class_name


@dataclass(slots=True)
class FrameRows:
    """The rows one frame adds, as plain Python tuples in the `schema.*_COLUMNS` order."""

    run_id: str
    stream_id: str
    wall_ns: int
    detections: list[tuple]
    tracks: dict[int, list[int]]  # track_id -> [class_id, first_pts, last_pts, frames, last_wall]

    @property
    def size(self) -> int:
        """Rows counted against `batch_size` (a frame without detections still counts 1)."""
        return max(1, len(self.detections))


@dataclass(slots=True)
class MergedRows:
    """The rows of several frames (or events, or a run's start or end), ready for one transaction."""

    detections: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    tracks: list[tuple] = field(default_factory=list)
    streams: list[tuple] = field(default_factory=list)
    runs: list[tuple] = field(default_factory=list)
    frames: int = 0


def frame_rows(result: FrameResult, class_names: list[str]) -> FrameRows:
    """Rows for one frame: its detections (host numpy) and the tracks they extend, in the result's run.
    Its events are stored from the outbox (`StoredEvents`), not here."""
    frame, det = result.frame, result.detections.to_host()
    n = len(det)
    ids = det.class_id.tolist()
    names = [class_name(class_names, c) for c in ids]
    boxes = det.xyxy.astype(np.float64).tolist()
    scores = det.score.astype(np.float64).tolist()
    track_ids = det.track_id.tolist()
    head = (result.run_id, frame.stream_id, int(frame.seq), int(frame.pts_ns), int(frame.wall_ns))
    detections = [(*head, ids[i], names[i], scores[i], *boxes[i], track_ids[i]) for i in range(n)]
    tracks: dict[int, list[int]] = {}
    for i in range(n):
        if track_ids[i] >= 0:
            tracks[track_ids[i]] = [ids[i], head[3], head[3], 1, head[4]]
    return FrameRows(result.run_id, frame.stream_id, int(frame.wall_ns), detections, tracks)


def event_row(event: Event) -> tuple:
    """One `events` row; its `wall_ns` is the event's (capture time of its frame, which retention uses)."""
    payload = json.dumps(event.payload, default=json_default, sort_keys=True)
    return (
        event.event_id, event.run_id, event.stream_id, event.rule, event.kind, int(event.track_id),
        int(event.class_id), int(event.ts_ns), payload, int(event.wall_ns), event.class_name, event.snapshot,
        event.clip,
    )


def run_row(run: Run, ended_ns: int | None = None) -> tuple:
    """One `runs` row: `ended_ns` None while the run goes on (the upsert keeps a recorded end)."""
    return (run.run_id, run.config_hash, run.version, run.started_ns, ended_ns)


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"event payload value of type {type(value).__name__} is not JSON serialisable")


def merge(frames: list[FrameRows], urls: dict[str, str | None]) -> MergedRows:
    """Concatenate detections; fold tracks per (run, stream, track) and streams per stream.

    Folding first keeps one upsert per track per transaction, so `frames` adds up correctly.
    `urls` maps stream ids to their already masked url (None when unknown).
    """
    out = MergedRows(frames=len(frames))
    tracks: dict[tuple[str, str, int], list[int]] = {}
    seen: dict[str, list[int]] = {}
    for rows in frames:
        out.detections.extend(rows.detections)
        span = seen.setdefault(rows.stream_id, [rows.wall_ns, rows.wall_ns])
        span[0], span[1] = min(span[0], rows.wall_ns), max(span[1], rows.wall_ns)
        for track_id, (cls, first, last, count, wall) in rows.tracks.items():
            key = (rows.run_id, rows.stream_id, track_id)
            acc = tracks.get(key)
            if acc is None:
                tracks[key] = [cls, first, last, count, wall]
                continue
            if last >= acc[2]:
                acc[0] = cls
            acc[1], acc[2] = min(acc[1], first), max(acc[2], last)
            acc[3] += count
            acc[4] = max(acc[4], wall)
    out.tracks = [(*key, *acc) for key, acc in tracks.items()]
    out.streams = [(sid, urls.get(sid), first, last) for sid, (first, last) in seen.items()]
    return out
