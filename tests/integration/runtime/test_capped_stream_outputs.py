"""A stream capped by `fps`, tracked, through the whole pipeline into JSONL and MOT files: frames keep their
source numbers, detections are the detector's, tracks the tracker's, and MOT rows are tracks matched to a
detection (coasting ones only when asked). The clip is made here: a bright square the fake engine finds,
moving right, gone for a few frames."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from pipeline.config.models import PipelineConfig
from pipeline.mot import read_mot
from pipeline.runtime.progress import STREAM_HEADERS, stream_rows, summary
from pipeline.runtime.runner import PipelineRunner

FRAMES, HIDDEN = 60, range(20, 28)  # source frames; the square is not there in HIDDEN


def write_clip(path: Path) -> Path:
    """20 fps, 160x120: a 32 px white square moving 2 px a frame on black."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=20)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(FRAMES):
            image = np.zeros((120, 160, 3), np.uint8)
            if i not in HIDDEN:
                image[40:72, 8 + 2 * i:40 + 2 * i] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def run(clip: Path, out: Path, tracker: bool):
    config = PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": "cam", "url": str(clip), "fps": 10, "decode": "cpu"}],  # half the clip's rate
        "detector": {"model": "fake", "engine": "fake"},
        "tracker": {"enabled": tracker, "min_hits": 2, "coast_frames": 3},
        "sinks": [{"type": "jsonl", "path": str(out / "detections.jsonl")},
                  {"type": "jsonl", "path": str(out / "tracks.jsonl"), "what": "tracks"},
                  {"type": "mot", "directory": str(out / "mot")},
                  {"type": "mot", "directory": str(out / "mot-coasted"), "include_coasted": True}],
        "runtime": {"outbox_path": str(out / "outbox.db")},
    })
    return PipelineRunner(config).run()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_capped_tracked_stream_keeps_source_numbers_and_its_outputs_mean_what_they_say(tmp_path):
    clip = write_clip(tmp_path / "square.mp4")
    snap = run(clip, tmp_path / "tracked", tracker=True)
    untracked = run(clip, tmp_path / "untracked", tracker=False)

    kept = list(range(0, FRAMES, 2))
    detections, tracks = records(tmp_path / "tracked/detections.jsonl"), records(tmp_path / "tracked/tracks.jsonl")
    assert [r["frame_index"] for r in detections] == [r["frame_index"] for r in tracks] == kept
    assert {r["epoch"] for r in detections} == {0}
    row = dict(zip(STREAM_HEADERS, stream_rows(snap)[0]))
    assert (row["detected"], row["skipped by cap"], row["dropped"]) == (30, 30, 0)  # skipped on purpose, not lost
    assert "skipped by cap" in summary(snap) and untracked.streams["cam"]["dropped_fps_cap"] == 30

    # detections are the detector's, whether a tracker runs or not; the tracker only adds the ids it matched
    without = records(tmp_path / "untracked/detections.jsonl")
    strip = [[(d["xyxy"], d["score"], d["class_id"]) for d in r["detections"]] for r in without]
    assert [[(d["xyxy"], d["score"], d["class_id"]) for d in r["detections"]] for r in detections] == strip
    assert all(not r["detections"] for r in detections if r["frame_index"] in HIDDEN)
    matched = {(r["frame_index"] + 1, d["track_id"]) for r in detections for d in r["detections"] if d["track_id"] >= 0}
    coasted = {(r["frame_index"] + 1, t["track_id"]) for r in tracks for t in r["tracks"] if t["coasted"]}
    assert {frame for frame, _ in coasted} == {21, 23, 25}  # coast_frames kept frames after the square went
    assert all(t["score"] == 0 for r in tracks for t in r["tracks"] if t["coasted"])
    smoothed = [(t["xyxy"], d["xyxy"]) for r, s in zip(tracks, detections) for t, d in zip(r["tracks"], s["detections"])]
    assert any(t != d for t, d in smoothed)  # the tracker's boxes are its own

    # MOT: source frame numbers (odd: every other frame from 1), only matched tracks unless asked
    mot, with_coasted = read_mot(tmp_path / "tracked/mot/cam.txt"), read_mot(tmp_path / "tracked/mot-coasted/cam.txt")
    assert {(int(f), int(t)) for f, t in mot[:, :2]} == matched and len(mot) == len(matched) > 20
    assert set(mot[:, 0].astype(int)) <= {i + 1 for i in kept}
    assert {(int(f), int(t)) for f, t in with_coasted[:, :2]} == matched | coasted
    assert (with_coasted[np.isin(with_coasted[:, 0], [21, 23, 25]), 6] == 0).all()
