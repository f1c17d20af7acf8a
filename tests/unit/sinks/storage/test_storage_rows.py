"""Rows from FrameResults and events, folding tracks per transaction, the two dialects."""
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.sinks.storage.rows import event_row, fold, frame_rows, merge
from pipeline.sinks.storage.schema import DETECTION_COLUMNS, EVENT_COLUMNS, TRACK_BOX_COLUMNS, statements
from pipeline.sinks.storage.views import VIEWS
from pipeline.types import Detections, Frame, FrameResult, Moment


def result(seq, track_ids, class_ids, wall_ns=1_000, run_id="run-1", coasting=()):
    """Frame `seq` (source index 2 * seq: a stream capped to half its rate) with one detection per track id
    (-1: unmatched), and tracks: the matched ones, 1 px off, then `coasting` ids' predictions at score 0."""
    n = len(track_ids)
    xyxy = np.arange(n * 4, dtype=np.float32).reshape(n, 4) + 0.5
    det = Detections(xyxy, np.full(n, 0.75, np.float32), np.array(class_ids), track_id=np.array(track_ids))
    matched = det[det.track_id >= 0]
    predicted = Detections(np.zeros((len(coasting), 4), np.float32), np.zeros(len(coasting), np.float32),
                           np.zeros(len(coasting), np.int32), track_id=np.array(coasting, np.int64))
    tracks = Detections.concat([Detections(matched.xyxy + 1, matched.score, matched.class_id,
                                           track_id=matched.track_id), predicted])
    frame = Frame("cam-1", seq, seq * 40_000_000, wall_ns + seq, None, 640, 480, index=2 * seq, epoch=1)
    return FrameResult(frame, det, run_id=run_id, tracks=tracks)


def test_detection_rows_follow_the_column_order_with_class_names_and_the_run():
    rows = frame_rows(result(3, [7, -1], [0, 5], coasting=[9]), ["person", "bicycle"], "detections")
    assert len(rows.detections[0]) == len(DETECTION_COLUMNS) and rows.track_boxes == []
    first = dict(zip(DETECTION_COLUMNS, rows.detections[0]))
    assert first == dict(
        run_id="run-1", stream_id="cam-1", seq=3, pts_ns=120_000_000, wall_ns=1_003, class_id=0,
        class_name="person", score=0.75, x1=0.5, y1=1.5, x2=2.5, y2=3.5, track_id=7, frame_index=6, epoch=1,
    )
    assert rows.detections[1][6] == "5"  # unknown class id stored as its number
    assert len(rows.detections) == 2  # the detector's rows, never the coasting track's prediction
    assert list(rows.tracks) == [7]  # untracked detections extend no track, nor does a prediction


def test_track_box_rows_are_the_trackers_boxes_with_the_coasting_ones_marked():
    rows = frame_rows(result(3, [7, -1], [0, 5], coasting=[9]), ["person", "bicycle"], "tracks")
    assert rows.detections == [] and list(rows.tracks) == [7]
    boxes = [dict(zip(TRACK_BOX_COLUMNS, row)) for row in rows.track_boxes]
    assert boxes[0] == dict(
        run_id="run-1", stream_id="cam-1", seq=3, frame_index=6, epoch=1, pts_ns=120_000_000, wall_ns=1_003,
        track_id=7, class_id=0, class_name="person", score=0.75, x1=1.5, y1=2.5, x2=3.5, y2=4.5, coasted=0,
    )
    assert (boxes[1]["track_id"], boxes[1]["score"], boxes[1]["coasted"]) == (9, 0.0, 1)
    assert len(boxes) == 2 and rows.size == 2


def test_an_events_only_sink_stores_no_rows_per_frame_but_still_sees_the_stream():
    rows = frame_rows(result(3, [7], [0], coasting=[9]), ["person"], "events")
    assert (rows.detections, rows.track_boxes, rows.tracks) == ([], [], {})
    assert fold(merge([rows], {})).streams == [("cam-1", None, 1_003, 1_003)]


def test_merge_folds_one_track_across_frames_into_one_upsert():
    frames = [frame_rows(result(s, [4], [0 if s < 2 else 2]), ["a", "b", "c"], "detections") for s in range(3)]
    merged = fold(merge(frames, {"cam-1": "rtsp://***@cam"}))
    assert merged.tracks == [("run-1", "cam-1", 4, 2, 0, 80_000_000, 3, 1_002)]
    assert merged.streams == [("cam-1", "rtsp://***@cam", 1_000, 1_002)]
    assert len(merged.detections) == 3 and merged.frames == 3


def test_the_same_track_id_in_two_runs_is_two_tracks():
    frames = [frame_rows(result(s, [4], [0], run_id=run), ["a"], "detections") for run in ("run-1", "run-2")
              for s in range(2)]
    folded = fold(merge(frames, {})).tracks
    assert [t[:3] + t[6:7] for t in folded] == [("run-1", "cam-1", 4, 2), ("run-2", "cam-1", 4, 2)]


def test_event_rows_carry_the_events_run_and_capture_time_and_a_json_payload():
    event = Moment("run-1", "cam-1", 5, 1_700_000_000 * 10**9).event(
        "dwell-door", "dwell", 4, 0, {"seconds": np.float32(2.5), "box": np.zeros(2), "crop": Path("/m/c.jpg")})
    row = dict(zip(EVENT_COLUMNS, event_row(replace(event, class_name="person", clip="/media/cam-1/x.mp4"))))
    assert (row["event_id"], row["run_id"], row["ts_ns"], row["wall_ns"]) == (
        event.event_id, "run-1", 5, 1_700_000_000 * 10**9)
    assert (row["class_name"], row["snapshot"], row["clip"]) == ("person", None, "/media/cam-1/x.mp4")
    assert json.loads(row["payload"]) == {"box": [0.0, 0.0], "crop": "/m/c.jpg", "seconds": 2.5}  # as the outbox


def created(statement: str) -> str:
    """The table, index or view a CREATE or DROP statement names."""
    return re.search(r"(?:EXISTS|CREATE VIEW) (\w+)", statement).group(1)


def test_both_dialects_create_the_same_tables_and_indexes():
    sqlite, postgres = statements("sqlite"), statements("postgres")
    names = [created(s) for s in sqlite.create]
    assert names == [created(s) for s in postgres.create]
    assert {"runs", "streams", "detections", "track_boxes", "tracks", "events", "detections_run_stream_pts",
            "detections_run_stream_track", "events_kind_ts", "events_stream_ts", *VIEWS} <= set(names)
    assert [created(s) for s in sqlite.upgrade[2][-len(VIEWS):]] == list(VIEWS)  # an upgrade makes the views again
    assert "ON CONFLICT (event_id) DO NOTHING" in sqlite.insert_event and "ON CONFLICT (event_id) DO NOTHING" in postgres.insert_event
    assert "ON CONFLICT (run_id, stream_id, track_id)" in sqlite.upsert_track
