"""JSONL and MOTChallenge export sinks writing real files from MOT17-05 replayed as tracked detections."""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.outputs import JsonlOutput, MotExport
from pipeline.errors import SinkError
from pipeline.mot import read_mot
from pipeline.sinks import mot_export
from pipeline.sinks.appending import Appender, PartKept
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.mot_export import MotExportSink
from pipeline.sinks.storage.writer import StorageUnavailable
from pipeline.types import Detections
from tests.integration.storage.replay import MOT_CLASSES, as_tracked, feed
from tests.support.waiting import wait_until


def test_jsonl_writes_one_object_per_frame_with_its_detections(tmp_path, mot17_05):
    sink = JsonlSink(JsonlOutput(type="jsonl", path=tmp_path / "out" / "det.jsonl"), MOT_CLASSES)
    sink.open()
    feed(sink, mot17_05)
    sink.close()

    records = [json.loads(line) for line in (tmp_path / "out" / "det.jsonl").read_text().splitlines()]
    assert len(records) == len(mot17_05)
    for record, result in zip(records[::97], mot17_05[::97]):
        det = result.detections
        assert (record["stream_id"], record["seq"], record["pts_ns"]) == ("cam-05", result.frame.seq, result.frame.pts_ns)
        assert (record["frame_index"], record["epoch"]) == (result.frame.index, 0)
        assert [d["track_id"] for d in record["detections"]] == det.track_id.tolist()
        assert [d["class_name"] for d in record["detections"]] == [MOT_CLASSES[c] for c in det.class_id.tolist()]
        np.testing.assert_allclose([d["xyxy"] for d in record["detections"]], det.xyxy.reshape(-1, 4), atol=0.005)
        np.testing.assert_allclose([d["score"] for d in record["detections"]], det.score, atol=5e-5)


def test_jsonl_tracks_are_the_trackers_boxes_with_the_coasting_ones_marked_and_detections_the_detectors(
        tmp_path, mot17_05):
    results = mot17_05[:300]
    predictions = as_tracked(results)
    sinks = {what: JsonlSink(JsonlOutput(type="jsonl", path=tmp_path / f"{what}.jsonl", what=what), MOT_CLASSES)
             for what in ("detections", "tracks")}
    for sink in sinks.values():
        sink.open()
        feed(sink, results)
        sink.close()

    detections, tracks = ([json.loads(line) for line in (tmp_path / f"{what}.jsonl").read_text().splitlines()]
                          for what in ("detections", "tracks"))
    assert [r["frame_index"] for r in detections] == [r["frame_index"] for r in tracks] == list(range(300))
    assert all("tracks" not in r for r in detections) and all("detections" not in r for r in tracks)
    coasting = [(r["frame_index"], t["track_id"]) for r in tracks for t in r["tracks"] if t["coasted"]]
    assert sorted(coasting) == sorted(predictions) and len(coasting) > 20
    assert all(t["score"] == 0 for r in tracks for t in r["tracks"] if t["coasted"])
    for det_record, track_record, result in zip(detections, tracks, results):
        found = {d["track_id"]: d for d in det_record["detections"]}
        assert len(found) == len(result.detections)  # no prediction among the detections
        for track in track_record["tracks"]:
            if not track["coasted"]:  # the tracker's box, here 1 px off the detector's
                np.testing.assert_allclose(track["xyxy"], np.add(found[track["track_id"]]["xyxy"], 1), atol=0.011)


def test_jsonl_lines_appear_while_running_not_only_at_close(tmp_path, mot17_05):
    path = tmp_path / "live.jsonl"
    sink = JsonlSink(JsonlOutput(type="jsonl", path=path), MOT_CLASSES, flush_interval_s=0.05)
    sink.open()
    feed(sink, mot17_05[:10])
    assert wait_until(lambda: len(path.read_text().splitlines()) >= 10)
    assert len(path.read_text().splitlines()) == 10
    sink.close()


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_jsonl_moved_away_by_a_log_rotation_or_deleted_is_written_again_at_its_path(tmp_path, mot17_05, how):
    path = tmp_path / "live.jsonl"
    sink = JsonlSink(JsonlOutput(type="jsonl", path=path), MOT_CLASSES, flush_interval_s=0.05)
    sink.open()
    feed(sink, mot17_05[:10])
    assert wait_until(lambda: sink.stats()["records_written"] == 10)
    if how == "moved":
        path.rename(tmp_path / "live.jsonl.1")
    else:
        path.unlink()
    feed(sink, mot17_05[10:15])
    sink.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [10, 11, 12, 13, 14]
    if how == "moved":
        assert len((tmp_path / "live.jsonl.1").read_text().splitlines()) == 10


def test_jsonl_opened_on_a_file_ending_inside_a_record_cuts_it_and_appends_whole_lines(tmp_path, mot17_05, caplog):
    path = tmp_path / "det.jsonl"
    earlier = JsonlSink(JsonlOutput(type="jsonl", path=path), MOT_CLASSES)
    earlier.open()
    feed(earlier, mot17_05[:3])
    earlier.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"stream_id": "cam-05", "seq": 3, "fr')  # an earlier run stopped mid-write
    sink = JsonlSink(JsonlOutput(type="jsonl", path=path), MOT_CLASSES)
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.jsonl"):
        sink.open()
    feed(sink, mot17_05[3:6])
    sink.close()
    assert path.read_bytes().startswith(whole)
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [0, 1, 2, 3, 4, 5]
    assert "ended inside a record" in caplog.text and sink.stats()["records_written"] == 3


def test_jsonl_opened_on_a_whole_last_record_without_its_newline_keeps_it_and_on_another_kind_of_file_refuses(
        tmp_path, mot17_05):
    path = tmp_path / "det.jsonl"
    path.write_bytes(b'{"stream_id": "by-hand", "seq": 0}')  # a whole record, no newline after it
    sink = JsonlSink(JsonlOutput(type="jsonl", path=path), MOT_CLASSES)
    sink.open()
    feed(sink, mot17_05[:2])
    sink.close()
    assert [json.loads(line)["stream_id"] for line in path.read_text().splitlines()] == ["by-hand", "cam-05", "cam-05"]
    other = tmp_path / "notes.txt"
    other.write_bytes(b"first line\nsomething else entirely")
    with pytest.raises(SinkError, match="not a JSON Lines file"):
        JsonlSink(JsonlOutput(type="jsonl", path=other), MOT_CLASSES).open()
    assert other.read_bytes() == b"first line\nsomething else entirely"


def test_jsonl_on_a_full_disk_keeps_its_records_and_writes_each_once_when_room_comes_back(tmp_path, shared):
    """Run in a process of its own: the full disk is the file size limit (RLIMIT_FSIZE), set below the first batch."""
    path, gt = tmp_path / "det.jsonl", shared("data/mot17/MOT17-05/gt/gt.txt")
    script = f"""
import resource, signal, time
from pathlib import Path
from pipeline.config.outputs import JsonlOutput
from pipeline.sinks.jsonl import JsonlSink
from tests.integration.storage.replay import MOT_CLASSES, RUN, feed, mot_results
results = mot_results(Path({str(gt)!r}), "cam-05", 14.0, time.time_ns(), RUN.run_id)[:200]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
sink = JsonlSink(JsonlOutput(type="jsonl", path={str(path)!r}), MOT_CLASSES, flush_interval_s=0.05)
sink.open()
feed(sink, results)
deadline = time.monotonic() + 60
while sink.stats()["retries"] < 2 and time.monotonic() < deadline:  # it met the full disk and tried again
    time.sleep(0.01)
full = dict(sink.stats())
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
sink.close()
print(full["retries"], full["records_written"], sink.stats()["records_written"], sink.stats()["rows_lost"],
      sink.stats()["rows_rejected"])
"""
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    retries, while_full, written, lost, rejected = map(int, done.stdout.split())
    assert retries >= 2 and while_full < 200 and (written, lost, rejected) == (200, 0, 0)
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == list(range(200))  # each once


def test_mot_export_on_a_full_disk_keeps_its_rows_and_markers_and_writes_each_once_when_room_comes_back(
        tmp_path, shared):
    """Run in a process of its own: the full disk is the file size limit (RLIMIT_FSIZE), set below the rows. Before,
    the batch that met it was dropped (counted rejected), its stream start and end with it, and its rows were
    partly written."""
    gt, full, reference = shared("data/mot17/MOT17-05/gt/gt.txt"), tmp_path / "full", tmp_path / "reference"
    script = f"""
import resource, signal, time
from pathlib import Path
from pipeline.config.outputs import MotExport
from pipeline.sinks.mot_export import MotExportSink
from tests.integration.storage.replay import RUN, feed, mot_results
results = mot_results(Path({str(gt)!r}), "cam-05", 14.0, time.time_ns(), RUN.run_id)[:300]
def export(directory):
    sink = MotExportSink(MotExport(type="mot", directory=directory), flush_interval_s=0.05)
    sink.open()
    sink.on_stream_start("cam-05", "mot17-05.mp4")
    feed(sink, results)
    sink.on_stream_end("cam-05")
    return sink
export({str(reference)!r}).close()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (Path({str(reference)!r}, "cam-05.txt").stat().st_size // 2, hard))
sink = export({str(full)!r})
deadline = time.monotonic() + 20
while sink.stats()["retries"] < 2 and time.monotonic() < deadline:  # it met the full disk and tried again
    time.sleep(0.01)
full = dict(sink.stats())
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
sink.close()
print(full["retries"], full["rows_rejected"], sink.stats()["rows_lost"], sink.stats()["rows_rejected"])
"""
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    retries, rejected_while_full, lost, rejected = map(int, done.stdout.split())
    assert retries >= 2 and (rejected_while_full, lost, rejected) == (0, 0, 0)
    assert (full / "cam-05.txt").read_bytes() == (reference / "cam-05.txt").read_bytes()  # each row once, in order


class _AppendOnly:
    """A JSONL output's file that fills after `room` bytes and cannot be truncated (an append-only file)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def __getattr__(self, name):
        return getattr(self.file, name)

    def write(self, data: bytes) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.file.write(data[:self.room])
        self.room -= written
        return written

    def truncate(self, size=None):
        raise OSError(errno.EPERM, "Operation not permitted")


def test_jsonl_write_that_cannot_be_taken_back_is_continued_by_its_retry(tmp_path):
    """Before, the batch was dropped (counted rejected) and its half record left a broken line on the file."""
    path = tmp_path / "det.jsonl"
    sink = JsonlSink(JsonlOutput(type="jsonl", path=str(path)), MOT_CLASSES)
    sink.open()
    real = sink._file.handle
    sink._file.handle = _AppendOnly(real, room=40)  # one record (30 bytes) and part of the next
    batch = [{"seq": i, "pad": "x" * 8} for i in range(3)]
    with pytest.raises(StorageUnavailable, match="nor take back the part written"):  # the writer keeps the batch
        sink._write(batch)
    sink._file.handle = real  # room again: the writer's retry
    sink._write(batch)
    sink._write([{"seq": 10}])
    sink.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [0, 1, 2, 10]


def test_a_batch_given_up_after_its_start_stayed_on_the_file_leaves_a_line_of_its_own(tmp_path):
    path = tmp_path / "det.jsonl"
    with path.open("wb", buffering=0) as handle:
        appender = Appender(_AppendOnly(handle, room=12))
        with pytest.raises(PartKept):
            appender.append(b'{"seq": 0, "pad": 1}\n', "a record")
        appender.handle.room = 1000
        appender.append(b'{"seq": 10}\n', "another record")  # not the batch cut short: it was given up at close
    assert path.read_text().splitlines() == ['{"seq": 0, "', '{"seq": 10}']


def test_a_pipe_whose_reader_has_ended_is_an_error_no_retry_can_mend():
    read, write = os.pipe()
    os.close(read)
    with open(write, "wb", buffering=0) as handle:
        with pytest.raises(SinkError, match="the program reading the pipe has ended") as raised:
            Appender(handle).append(b'{"seq": 0}\n', "a record to stdout")
    assert not isinstance(raised.value, StorageUnavailable)  # the writer drops the batch instead of keeping it


def test_mot_rows_cut_short_on_a_file_that_cannot_be_cut_back_are_written_once_whole(tmp_path, mot17_05, monkeypatch):
    def export(directory):
        sink = MotExportSink(MotExport(type="mot", directory=directory), flush_interval_s=0.05)
        sink.open()
        sink.on_stream_start("cam-05", "mot17-05.mp4")
        feed(sink, mot17_05[:60])
        sink.on_stream_end("cam-05")
        return sink

    export(tmp_path / "reference").close()
    files = []

    def append_only(handle):  # every file the sink opens fills after 1,500 bytes and cannot be truncated
        files.append(_AppendOnly(handle, room=1500))
        return Appender(files[-1])

    monkeypatch.setattr(mot_export, "Appender", append_only)
    sink = export(tmp_path / "cut")
    assert wait_until(lambda: sink.stats()["retries"] >= 2, timeout=20)
    files[-1].room = 10**9  # room again
    sink.close()
    assert (sink.stats()["rows_lost"], sink.stats()["rows_rejected"]) == (0, 0)
    assert (tmp_path / "cut" / "cam-05.txt").read_bytes() == (tmp_path / "reference" / "cam-05.txt").read_bytes()


def test_mot_export_writes_the_tracks_matched_to_a_detection_at_their_source_frame_numbers(tmp_path, mot17_05):
    capped = mot17_05[::2]  # a stream capped to half the source's rate: its frames keep their source numbers
    predictions = as_tracked(capped)
    sinks = [MotExportSink(MotExport(type="mot", directory=tmp_path / name, include_coasted=coasted))
             for name, coasted in (("matched", False), ("all", True))]
    for sink in sinks:
        sink.open()
        sink.on_stream_start("cam-05", "mot17-05.mp4")
        feed(sink, capped)
        sink.on_stream_end("cam-05")
        sink.close()

    matched, everything = (read_mot(sink.path_for("cam-05")) for sink in sinks)
    expected = np.array([
        [r.frame.index + 1, t, *box[:2], *(box[2:] - box[:2]), s]
        for r in capped
        for t, box, s in zip(r.tracks.track_id.tolist(), r.tracks.xyxy.astype(np.float64), r.tracks.score.tolist())
    ])
    assert set(np.unique(everything[:, 0])) <= set(range(1, 838, 2))  # MOT17-05's frames 1, 3, 5, ...
    assert everything.shape == (len(expected), 10)
    np.testing.assert_array_equal(everything[:, :2], expected[:, :2])
    np.testing.assert_allclose(everything[:, 2:6], expected[:, 2:6], atol=0.006)
    np.testing.assert_allclose(everything[:, 6], expected[:, 6], atol=5e-5)
    assert (everything[:, 7:] == -1).all()
    detected = {(r.frame.index + 1, t) for r in capped for t in r.detections.track_id.tolist()}
    assert {(int(f), int(t)) for f, t in matched[:, :2]} == detected  # no row a detection did not match
    coasting = {(i + 1, t) for i, t in predictions}
    assert len(matched) == len(everything) - len(predictions) and len(coasting) > 10
    assert {(int(f), int(t)) for f, t, *_ in everything if (f, t) not in detected} == coasting


def test_mot_export_writes_each_reading_of_a_source_apart_and_starts_again_with_the_stream(tmp_path, mot17_05):
    def reading(results, epoch):
        return [replace(r, frame=replace(r.frame, epoch=epoch)) for r in results]

    config = MotExport(type="mot", directory=tmp_path)
    for _ in range(2):  # a second run writes the files again instead of doubling them
        sink = MotExportSink(config)
        sink.open()
        sink.on_stream_start("cam-05", "mot17-05.mp4")
        feed(sink, reading(mot17_05[:20], 0))
        feed(sink, reading(mot17_05[:30], 1))  # the file looped: its second pass, numbered from 1 again
        sink.on_stream_end("cam-05")
        sink.close()
    first, second = read_mot(tmp_path / "cam-05.txt"), read_mot(tmp_path / "epoch-1" / "cam-05.txt")
    assert (first[:, 0].min(), first[:, 0].max(), second[:, 0].min(), second[:, 0].max()) == (1, 20, 1, 30)
    assert len(first) == sum(len(r.tracks) for r in mot17_05[:20])

    sink = MotExportSink(config)  # a stream restarted while running starts its file again, as its numbers do
    sink.open()
    sink.on_stream_start("cam-05", "mot17-05.mp4")
    feed(sink, reading(mot17_05[:20], 0))
    sink.on_stream_end("cam-05")
    sink.on_stream_start("cam-05", "mot17-05.mp4")
    feed(sink, reading(mot17_05[:10], 0))
    sink.close()
    assert read_mot(tmp_path / "cam-05.txt")[:, 0].max() == 10


def test_mot_export_of_a_stream_that_tracks_nothing_is_an_empty_file_not_the_rows_of_the_run_before(tmp_path, mot17_05):
    config = MotExport(type="mot", directory=tmp_path)
    nothing = [replace(r, tracks=Detections.empty()) for r in mot17_05[:20]]
    for results in (mot17_05[:20], nothing):  # the same stream id, run again on a scene where nothing is tracked
        sink = MotExportSink(config)
        sink.open()
        sink.on_stream_start("cam-05", "mot17-05.mp4")
        feed(sink, results)
        sink.on_stream_end("cam-05")
        sink.close()
    assert (tmp_path / "cam-05.txt").read_text() == ""


def test_mot_export_keeps_nothing_of_a_camera_once_it_has_ended(tmp_path, mot17_05):
    sink = MotExportSink(MotExport(type="mot", directory=tmp_path))
    sink.open()
    for i in range(20):  # cameras added and removed over the API, each under an id of its own
        sink.on_stream_start(f"cam-{i}", "mot17-05.mp4")
        feed(sink, [replace(r, frame=replace(r.frame, stream_id=f"cam-{i}")) for r in mot17_05[:3]])
        sink.on_stream_end(f"cam-{i}")
    sink.close()
    assert len(read_mot(tmp_path / "cam-19.txt")) == sum(len(r.tracks) for r in mot17_05[:3])
    assert sink._started == {} and sink._files == {}  # per camera ever run, a set of its files: grew for good
