"""MOT17 ground truth replayed as tracked detections, and the storage back-ends behind one factory
(helpers for the storage tests; the fixtures are in conftest.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.backoff import Backoff
from pipeline.config.outputs import PostgresStorage, SqliteStorage
from pipeline.sinks.outbox import Outbox
from pipeline.sinks.storage import PostgresSink, SqliteSink
from pipeline.types import Detections, Frame, FrameResult, Run

MOT_CLASSES = [
    "pedestrian", "person_on_vehicle", "car", "bicycle", "motorbike", "non_motorized_vehicle",
    "static_person", "distractor", "occluder", "occluder_on_ground", "occluder_full", "reflection",
]
CONFIG_KEYS = {"batch_size", "flush_interval_s", "retention_days", "what"}


def make_run(run_id: str, started_ns: int, instance: str = "") -> Run:
    return Run(run_id, "0123456789abcdef", "test", started_ns, instance)


RUN = make_run("20250101T000000.000Z-0000cafe", time.time_ns())
"""The run of the `mot17_05` fixture and, unless told otherwise, of the stores' sinks."""


def mot_results(gt_path: Path, stream_id: str, fps: float, wall_start_ns: int, run_id: str) -> list[FrameResult]:
    """One FrameResult per frame of a MOT17 `gt.txt` (rows marked considered), in run `run_id`, each box both
    a detection matched to its track and the track's box (id = track, visibility = score, MOT class - 1 =
    class id), and an `enter` event at each track's first frame."""
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
        frame = Frame(stream_id, frame_no - 1, pts, wall_start_ns + pts, None, 640, 480, index=frame_no - 1)
        tracks = Detections(det.xyxy.copy(), det.score.copy(), det.class_id.copy(), track_id=det.track_id.copy())
        result = FrameResult(frame, det, run_id=run_id, tracks=tracks)
        for tid, cls in zip(det.track_id.tolist(), det.class_id.tolist()):
            if tid not in seen:
                seen.add(tid)
                result.events.append(result.moment.event("all", "enter", tid, cls, {"zone": "all", "frame": frame_no}))
        results.append(result)
    return results


def as_tracked(results: list) -> list:
    """The replay as a tracker reports it: each track's box 1 px off its detection, and a track whose
    detection is missing on a frame coasting on that frame (only) at its last box, score 0. Returns
    (frame index, track id) of each prediction."""
    predictions, last = [], {}
    for result in results:
        tracks = result.tracks
        tracks.xyxy += 1
        ids = tracks.track_id.tolist()
        lost = [tid for tid in last if tid not in ids]
        coasting = Detections(np.array([last[tid][0] for tid in lost], np.float32).reshape(-1, 4),
                              np.zeros(len(lost), np.float32), np.array([last[tid][1] for tid in lost], np.int32),
                              track_id=np.array(lost, np.int64))
        result.tracks = Detections.concat([tracks, coasting])
        predictions += [(result.frame.index, tid) for tid in lost]
        last = {tid: (box, cls) for tid, box, cls in zip(ids, tracks.xyxy.tolist(), tracks.class_id.tolist())}
    return predictions


def feed(sink, results: list[FrameResult]) -> None:
    for result in results:
        sink.on_frame(result)


def deliver_events(sink, results: list[FrameResult], outbox_path: Path) -> None:
    """The results' events through a real outbox into the sink's events table, as a running pipeline does."""
    with Outbox(outbox_path, [sink.event_output], backoff=Backoff(0.01, 0.2)) as outbox:
        outbox.put([e for r in results for e in r.events])
        assert outbox.wait_delivered(60), outbox.stats()


@dataclass
class Store:
    """A storage back-end under test: `make(run=RUN, **settings)` builds an unopened sink for `run`; `target`
    is what `pipeline.sinks.storage.query` reads."""

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
    def make(run: Run = RUN, **settings):
        config, options = _split(settings)
        return _announced(SqliteSink(SqliteStorage(type="sqlite", path=path, **config), MOT_CLASSES, run, **options))

    return Store("sqlite", make, path)


def postgres_store(dsn: str) -> Store:
    def make(run: Run = RUN, **settings):
        config, options = _split(settings)
        return _announced(PostgresSink(PostgresStorage(type="postgres", dsn=dsn, **config), MOT_CLASSES, run,
                                       **options))

    return Store("postgres", make, dsn)
