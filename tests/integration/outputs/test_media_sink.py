"""MediaSink: snapshot JPEGs checked by decoding them, and clip requests handed to a clip recorder."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from pipeline.config.models import AlertRule
from pipeline.config.outputs import MediaOutput
from pipeline.sinks.media import MediaSink, crop_box, media_paths
from pipeline.types import Detections, Event, Frame, FrameResult, Moment


def rule(name="door", snapshot=True, clip=False) -> AlertRule:
    return AlertRule(name=name, when="enter", zone="z", snapshot=snapshot, clip=clip)


def event_at(ts_ns: int, rule_name="door", track_id=7, stream="cam-1", kind="alert") -> Event:
    """An alert of rule `rule_name` that does not say what it brings (the sink asks the rule)."""
    at = Moment("run-1", stream, ts_ns, 1_700_000_000 * 10**9 + ts_ns)
    return at.event(rule_name, kind, track_id, 0, {"zone": "z"})


def result_for(image: np.ndarray, events, pts_ns=0, tracks=None, fmt="rgb24", size=None) -> FrameResult:
    """A frame whose `tracks` (None: none) were each detected too."""
    width, height = size or (image.shape[1], image.shape[0])
    frame = Frame("cam-1", 0, pts_ns, 0, image, width, height, fmt)
    tracks = tracks if tracks is not None else Detections.empty()
    return FrameResult(frame, tracks, list(events), run_id="run-1", tracks=tracks)


def decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_snapshot_jpeg_decodes_to_the_frame_size_with_a_crop_of_the_object(tmp_path):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule()])
    sink.open()
    image = np.zeros((240, 320, 3), np.uint8)
    image[100:160, 50:110] = (250, 20, 20)  # the object
    tracks = Detections(np.array([[50, 100, 110, 160]], np.float32), np.array([0.9], np.float32),
                        np.array([0], np.int32), track_id=np.array([7], np.int64))
    event = event_at(123)
    sink.on_frame(result_for(image, [event], tracks=tracks))
    sink.close()
    paths = media_paths(tmp_path, "cam-1", event.event_id)
    (full,) = decode_all(paths.snapshot)
    assert (full.width, full.height) == (320, 240)
    assert np.abs(full.to_ndarray(format="rgb24").astype(int) - image).mean() < 3
    (crop,) = decode_all(paths.crop)
    assert (crop.width, crop.height) == (72, 72)  # 60 px box + 10 % margin each side
    assert crop.to_ndarray(format="rgb24")[36, 36, 0] > 200
    assert sink.stats()["snapshots"] == 1 and sink.stats()["crops"] == 1


def test_a_media_directory_in_the_home_folder_gets_the_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    sink = MediaSink(MediaOutput(type="media", directory="~/media"), [rule()])
    sink.open()
    event = event_at(123)
    named = sink.files_for(event)["snapshot"]
    sink.on_frame(result_for(np.zeros((48, 64, 3), np.uint8), [event]))
    sink.close()
    assert named == media_paths(tmp_path / "home" / "media", "cam-1", event.event_id).snapshot
    assert len(decode_all(named)) == 1
    assert not (tmp_path / "~").exists()


def test_snapshot_of_an_nv12_frame_decodes_to_the_frame_size(tmp_path):
    rgb = np.full((240, 320, 3), (30, 200, 90), np.uint8)
    nv12 = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray()
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule()])
    event = event_at(5)
    sink.on_frame(result_for(nv12, [event], fmt="nv12", size=(320, 240)))
    (full,) = decode_all(media_paths(tmp_path, "cam-1", event.event_id).snapshot)
    assert (full.width, full.height) == (320, 240)
    assert np.abs(full.to_ndarray(format="rgb24").astype(int) - rgb).mean() < 4


def test_rules_without_snapshot_or_unknown_rules_write_nothing(tmp_path):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule("quiet", snapshot=False)])
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(1, "quiet"), event_at(2, "unknown")]))
    assert not any(tmp_path.rglob("*.jpg"))


def test_an_event_names_the_files_the_sink_writes_for_it_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = MediaSink(MediaOutput(type="media", directory="media"), [rule(clip=True), rule("quiet", snapshot=False)])
    sink.open()
    loud, quiet = event_at(1), event_at(2, "quiet")
    files = sink.files_for(loud)
    assert files == {"snapshot": tmp_path / "media" / "cam-1" / f"{loud.event_id}.jpg",
                     "clip": tmp_path / "media" / "cam-1" / f"{loud.event_id}.mp4"}
    assert sink.files_for(quiet) == {}
    assert sink.files_for(event_at(3, kind="zone_enter")) == {}  # a zone named like the rule: no files of the rule's
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [loud, quiet]))
    sink.close()
    assert sorted(tmp_path.rglob("*.jpg")) == [files["snapshot"]]  # the clip: counted as missed, no recorder


def test_crop_box_grows_clips_and_keeps_even_sizes():
    assert crop_box([10, 10, 20, 20], 100, 100) == (9, 9, 21, 21)
    assert crop_box([-5, 90, 15, 120], 100, 100) == (0, 87, 16, 99)  # clipped at 0 and 100, then made even
    assert crop_box([120, 120, 130, 130], 100, 100) is None  # entirely outside the image
    assert crop_box([100, 10, 100, 20], 100, 100) is None  # zero width at the edge


class RecorderDouble:
    """A `ClipRecorder` that records what it is asked and answers `accept`; the test plays its writer."""

    def __init__(self, accept: bool = True):
        self.accept = accept
        self.requests: list[tuple] = []

    def record_clip(self, stream_id, ts_ns, before_s, after_s, path, on_done=None) -> bool:
        self.requests.append((stream_id, ts_ns, before_s, after_s, path, on_done))
        return self.accept


def test_clip_request_reaches_the_recorder_and_its_reports_are_counted(tmp_path):
    recorder = RecorderDouble()
    config = MediaOutput(type="media", directory=tmp_path, clip_before_s=1.5, clip_after_s=2.5)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)], clips=recorder)
    sink.open()
    written, failed = event_at(1_000, track_id=1), event_at(2_000, track_id=2)
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [written, failed]))
    assert [request[:5] for request in recorder.requests] == [
        ("cam-1", 1_000, 1.5, 2.5, media_paths(tmp_path, "cam-1", written.event_id).clip),
        ("cam-1", 2_000, 1.5, 2.5, media_paths(tmp_path, "cam-1", failed.event_id).clip),
    ]

    def write_clips():  # what the recorder's writer thread reports
        for (*_, path, on_done), error in zip(recorder.requests, (None, "disk full")):
            on_done(path, error)

    writer = threading.Thread(target=write_clips, name="clips")
    writer.start()
    writer.join(5.0)
    assert not writer.is_alive()
    recorder.accept = False  # no packets of the stream: the recorder refuses
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(3_000, track_id=3)]))
    sink.close()
    stats = sink.stats()
    assert (stats["clips"], stats["errors"], stats["clips_missed"]) == (1, 1, 1)
    assert stats["snapshots"] == 0 and not any(tmp_path.rglob("*.mp4"))


def test_clip_without_a_recorder_is_counted_as_missed_with_one_warning_per_stream(tmp_path, caplog):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule(snapshot=False, clip=True)])
    sink.open()
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.media"):
        sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(1), event_at(2, track_id=8)]))
        sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(3, stream="cam-2")]))
    sink.close()
    assert sink.stats()["clips_missed"] == 3 and not any(tmp_path.rglob("*.mp4"))
    warned = [record.getMessage() for record in caplog.records if "clip recorder" in record.getMessage()]
    assert len(warned) == 2 and "'cam-1'" in warned[0] and "'cam-2'" in warned[1]


def test_events_whose_frame_was_dropped_still_get_their_clips_and_count_their_snapshots_missed(tmp_path):
    recorder = RecorderDouble()
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule(clip=True)], clips=recorder)
    sink.open()
    event = event_at(1_000)
    named = replace(event, **{role: str(path) for role, path in sink.files_for(event).items()})  # as published
    sink.on_events("cam-1", [named])  # what the sink's queue hands on of a live frame it had to drop
    assert [request[4] for request in recorder.requests] == [media_paths(tmp_path, "cam-1", event.event_id).clip]
    assert sink.stats()["snapshots_missed"] == 1 and not any(tmp_path.rglob("*.jpg"))
    sink.on_events("cam-1", [event_at(2_000)])  # an event of no frame (a stream's end) names no files: none made
    assert len(recorder.requests) == 1 and sink.stats()["snapshots_missed"] == 1


def test_a_snapshot_that_cannot_be_written_costs_neither_its_clip_nor_the_frames_other_events(tmp_path):
    recorder = RecorderDouble()
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule(clip=True)], clips=recorder)
    sink.open()
    first, second = event_at(1, track_id=1), event_at(2, track_id=2)
    blocked = media_paths(tmp_path, "cam-1", first.event_id).snapshot
    blocked.parent.mkdir(parents=True)
    blocked.mkdir()  # the snapshot's file cannot be written: a folder holds its name
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [first, second]))
    assert len(recorder.requests) == 2 and media_paths(tmp_path, "cam-1", second.event_id).snapshot.exists()
    assert (sink.stats()["errors"], sink.stats()["snapshots"]) == (1, 1)


def test_media_past_retention_and_half_written_files_are_deleted_and_the_rest_kept(tmp_path):
    old_day, hours_ago = time.time() - 3 * 86_400, time.time() - 2 * 3600
    folder = tmp_path / "cam-1"
    folder.mkdir()
    files = {name: folder / name for name in ("old.jpg", "old_crop.jpg", "old.mp4", "new.jpg", "new.mp4",
                                              "stale.mp4.part", "writing.jpg.part", "notes.txt")}
    for name, path in files.items():
        path.write_bytes(b"x")
        if name.startswith(("old", "notes")):
            os.utime(path, (old_day, old_day))
        elif name.startswith("stale"):
            os.utime(path, (hours_ago, hours_ago))
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path, retention_days=2))
    sink.open()  # swept at once, then hourly
    assert sink.retention.swept.wait(10)
    sink.close()
    assert sorted(p.name for p in folder.iterdir()) == ["new.jpg", "new.mp4", "notes.txt", "writing.jpg.part"]
    assert sink.stats()["deleted"] == 4
