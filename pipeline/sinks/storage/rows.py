"""Turning FrameResults into table rows, and merging many frames' rows into one transaction's worth."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.sinks.outputs.payload import json_default
from pipeline.types import Detections, Event, FrameResult, Run, class_name


@dataclass(slots=True)
class FrameRows:
    """The rows one frame adds, as plain Python tuples in the `schema.*_COLUMNS` order."""

    run_id: str
    stream_id: str
    wall_ns: int
    detections: list[tuple]
    track_boxes: list[tuple]
    tracks: dict[int, list[int]]  # track_id -> [class_id, first_pts, last_pts, frames, last_wall]
    url: str | None = None  # the stream's, masked, as it was when the frame came (None: see `merge`'s urls)

    @property
    def size(self) -> int:
        """Rows counted against `batch_size` (a frame without any still counts 1)."""
        return max(1, len(self.detections) + len(self.track_boxes))


@dataclass(slots=True)
class MergedRows:
    """The rows of several frames (or events, or a run's start or end), ready for one transaction."""

    detections: list[tuple] = field(default_factory=list)
    track_boxes: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    tracks: list[tuple] = field(default_factory=list)
    streams: list[tuple] = field(default_factory=list)
    runs: list[tuple] = field(default_factory=list)
    frames: int = 0
    batch: str | None = None  # the writer's batch these frames' rows are (`writer.Batch.id`): the same on a retry


def frame_rows(result: FrameResult, class_names: list[str], what: str) -> FrameRows:
    """Rows for one frame in the result's run: with `what` "detections" its detections, with "tracks" its
    track boxes, and with either the tracks its detections extend; with "events" none (the frame still
    marks its stream as seen). Its events are stored from the outbox (`StoredEvents`), not here."""
    frame = result.frame
    rows = FrameRows(result.run_id, frame.stream_id, int(frame.wall_ns), [], [], {})
    if what == "events":
        return rows
    seq, index, epoch = int(frame.seq), int(frame.index), int(frame.epoch)
    pts_ns, wall_ns = int(frame.pts_ns), int(frame.wall_ns)
    detections = _columns(result.detections.to_host(), class_names)
    if what == "detections":
        rows.detections = [(result.run_id, frame.stream_id, seq, pts_ns, wall_ns, cls, name, score, *box, track,
                            index, epoch) for cls, name, score, box, track in detections]
    else:
        tracks = zip(_columns(result.tracks.to_host(), class_names), result.coasted().tolist())
        rows.track_boxes = [(result.run_id, frame.stream_id, seq, index, epoch, pts_ns, wall_ns, track, cls, name,
                             score, *box, int(coasted)) for (cls, name, score, box, track), coasted in tracks]
    for cls, _, _, _, track in detections:
        if track >= 0:
            rows.tracks[track] = [cls, pts_ns, pts_ns, 1, wall_ns]
    return rows


def _columns(det: Detections, class_names: list[str]) -> list[tuple]:
    """(class_id, class_name, score, [x1, y1, x2, y2], track_id) of each row, as plain Python values."""
    ids = det.class_id.tolist()
    return list(zip(ids, (class_name(class_names, c) for c in ids), det.score.astype(np.float64).tolist(),
                    det.xyxy.astype(np.float64).tolist(), det.track_id.tolist()))


def event_row(event: Event) -> tuple:
    """One `events` row; its `wall_ns` is the event's (capture time of its frame, which retention uses)."""
    payload = json.dumps(_without_nul(event.payload), default=json_default, sort_keys=True)
    return tuple(_without_nul(value) for value in (
        event.event_id, event.run_id, event.stream_id, event.rule, event.kind, int(event.track_id),
        int(event.class_id), int(event.ts_ns), payload, int(event.wall_ns), event.class_name, event.snapshot,
        event.clip, event.instance,
    ))


def _without_nul(value):
    """`value` with U+0000 in its strings (keys too) replaced by U+FFFD: PostgreSQL's text and jsonb cannot hold it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


def run_row(run: Run, ended_ns: int | None = None) -> tuple:
    """One `runs` row: `ended_ns` None while the run goes on (written with every batch of rows, it clears the end
    that a sink replaced while the run went on recorded at its close)."""
    return (run.run_id, run.config_hash, run.version, run.started_ns, ended_ns, run.instance or None)


def merge(frames: list[FrameRows], urls: dict[str, str | None]) -> MergedRows:
    """Concatenate the frames' rows, with each frame's part of its tracks and of its stream as rows of their own:
    fencing judges each by its frame's capture time (a batch may span the end of a camera's lease), and `fold`
    then makes them one upsert per track and per stream. `urls` maps stream ids to their already masked url
    for frames that do not carry it (None when unknown)."""
    out = MergedRows(frames=len(frames))
    for rows in frames:
        out.detections.extend(rows.detections)
        out.track_boxes.extend(rows.track_boxes)
        url = rows.url if rows.url is not None else urls.get(rows.stream_id)
        out.streams.append((rows.stream_id, url, rows.wall_ns, rows.wall_ns))
        out.tracks.extend((rows.run_id, rows.stream_id, track_id, *acc) for track_id, acc in rows.tracks.items())
    return out


def fold(rows: MergedRows) -> MergedRows:
    """`rows` with its tracks folded per (run, stream, track) and its streams per stream: one upsert each per
    transaction, so `frames` adds up correctly. Folding folded rows changes nothing."""
    tracks: dict[tuple[str, str, int], list[int]] = {}
    for run_id, stream_id, track_id, cls, first, last, count, wall in rows.tracks:
        acc = tracks.get((run_id, stream_id, track_id))
        if acc is None:
            tracks[(run_id, stream_id, track_id)] = [cls, first, last, count, wall]
            continue
        if last >= acc[2]:
            acc[0] = cls
        acc[1], acc[2] = min(acc[1], first), max(acc[2], last)
        acc[3] += count
        acc[4] = max(acc[4], wall)
    seen: dict[str, list] = {}
    for stream_id, url, first, last in rows.streams:
        span = seen.setdefault(stream_id, [url, first, last])
        span[1], span[2] = min(span[1], first), max(span[2], last)
    return replace(rows, tracks=[(*key, *acc) for key, acc in tracks.items()],
                   streams=[(stream_id, *span) for stream_id, span in seen.items()])
