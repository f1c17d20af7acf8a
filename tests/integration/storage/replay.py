"""MOT17 ground truth replayed as tracked detections, and the storage back-ends behind one factory
(helpers for the storage tests; the fixtures are in conftest.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.config.outputs import PostgresStorage, SqliteStorage
from pipeline.sinks.storage import PostgresSink, SqliteSink
from pipeline.types import Detections, Event, Frame, FrameResult, make_event_id

MOT_CLASSES = [
    "pedestrian", "person_on_vehicle", "car", "bicycle", "motorbike", "non_motorized_vehicle",
    "static_person", "distractor", "occluder", "occluder_on_ground", "occluder_full", "reflection",
]
CONFIG_KEYS = {"batch_size", "flush_interval_s", "retention_days"}


def mot_results(gt_path: Path, stream_id: str, fps: float, wall_start_ns: int) -> list[FrameResult]:
    """One FrameResult per frame of a MOT17 `gt.txt` (rows marked considered), with tracked
    detections (id = track, visibility = score, MOT class - 1 = class id) and an `enter` event at
    each track's first frame."""
    gt = np.loadtxt(gt_path, delimiter=",")
    gt = gt[gt[:, 6] == 1]
    last = int(gt[:, 0].max())
    order = np.argsort(gt[:, 0], kind="stable")
    gt = gt[order]
    bounds = np.searchsorted(gt[:, 0], np.arange(1, last + 2))
    seen: set[int] = set()
    results = []
    for frame_no in range(1, last + 1):
        rows = gt[bounds[frame_no - 1]:bounds[frame_no]]
        xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1).astype(np.float32)
        det = Detections(xyxy, rows[:, 8].astype(np.float32), rows[:, 7].astype(np.int32) - 1,
                         track_id=rows[:, 1].astype(np.int64))
        pts = round((frame_no - 1) * 1e9 / fps)
        frame = Frame(stream_id, frame_no - 1, pts, wall_start_ns + pts, None, 640, 480)
        events = []
        for tid, cls in zip(det.track_id.tolist(), det.class_id.tolist()):
            if tid not in seen:
                seen.add(tid)
                events.append(Event(make_event_id(stream_id, "enter", tid, pts), stream_id, "enter", "enter",
                                    tid, cls, pts, {"zone": "all", "frame": frame_no}))
        results.append(FrameResult(frame, det, events))
    return results


def feed(sink, results: list[FrameResult]) -> None:
    for result in results:
        sink.on_frame(result)


@dataclass
class Store:
    """A storage back-end under test: `make(**settings)` builds an unopened sink; `target` is what
    `pipeline.sinks.storage.query` reads."""

    kind: str
    make: Callable[..., Any]
    target: Any


def _split(settings: dict) -> tuple[dict, dict]:
    config = {k: v for k, v in settings.items() if k in CONFIG_KEYS}
    options = {k: v for k, v in settings.items() if k not in CONFIG_KEYS}
    return config, options


def _announced(sink):
    """A sink that knows the camera's URL, as the pipeline tells every sink when a stream starts."""
    sink.on_stream_start("cam-05", "rtsp://admin:hunter2@10.0.0.5/live")
    return sink


def sqlite_store(path: Path) -> Store:
    def make(**settings):
        config, options = _split(settings)
        return _announced(SqliteSink(SqliteStorage(type="sqlite", path=path, **config), MOT_CLASSES, **options))

    return Store("sqlite", make, path)


def postgres_store(dsn: str) -> Store:
    def make(**settings):
        config, options = _split(settings)
        return _announced(PostgresSink(PostgresStorage(type="postgres", dsn=dsn, **config), MOT_CLASSES, **options))

    return Store("postgres", make, dsn)
