import numpy as np
import pytest

from pipeline import mot
from pipeline.config.models import TrackerConfig
from pipeline.errors import SourceError
from pipeline.stages.tracking.cli import track_command
from pipeline.stages.tracking.stage import TrackingStage
from pipeline.types import Detections, Frame, FrameResult


def _result(seq, x):
    """Frame `seq` with one detection at `x` (None: nothing detected)."""
    frame = Frame("cam-1", seq, seq * 40_000_000, 0, None, 640, 480, index=seq)
    xyxy = np.array([[x, 100, x + 40, 200]] if x is not None else [], np.float32).reshape(-1, 4)
    n = len(xyxy)
    return FrameResult(frame, Detections(xyxy, np.full(n, 0.9, np.float32), np.zeros(n, np.int32)), run_id="run-1")


def test_tracking_stage_sets_the_tracks_and_the_matched_detections_track_ids_keeping_the_detectors_boxes():
    stage = TrackingStage(TrackerConfig(min_hits=2, coast_frames=2))
    results = [_result(seq, 100 + 5 * seq) for seq in range(4)] + [_result(seq, None) for seq in (4, 5)]
    for r in results:
        stage.process(r)
    assert len(results[0].tracks) == 0 and results[0].detections.track_id.tolist() == [-1]  # not confirmed yet
    assert [r.tracks.track_id.tolist() for r in results[1:]] == [[1]] * 5
    assert [r.detections.track_id.tolist() for r in results[1:4]] == [[1], [1], [1]]
    for r, x in zip(results[:4], range(100, 120, 5)):  # the detector's boxes, not the smoothed ones
        assert r.detections.xyxy.tolist() == [[x, 100, x + 40, 200]]
    assert [r.coasted().tolist() for r in results[1:]] == [[False]] * 3 + [[True]] * 2
    assert [len(r.detections) for r in results[4:]] == [0, 0]  # a prediction is never a detection


def test_tracking_stage_bridges_dropped_frames_and_forgets_tracks_when_the_stream_restarts():
    stage = TrackingStage(TrackerConfig(coast_frames=0))
    for seq in range(5):
        stage.process(_result(seq, 100 + 5 * seq))
    jumped = _result(12, 160)  # 7 frames dropped upstream; the object kept walking
    stage.process(jumped)
    assert jumped.detections.track_id.tolist() == jumped.tracks.track_id.tolist() == [1]
    assert stage.tracker.frame_count == 13
    restarted = [_result(seq, 100) for seq in range(2)]
    for r in restarted:
        stage.process(r)
    assert restarted[1].detections.track_id.tolist() == [2]  # a new track; ids go on within the run
    assert stage.tracker.frame_count == 2
    assert restarted[0].ended_tracks.tolist() == [1]  # the restart ended the old track


def test_tracking_stage_says_which_tracks_it_gave_up_on_the_frame_it_gave_them_up():
    stage = TrackingStage(TrackerConfig(max_lost_frames=5))
    results = [_result(seq, 100 + 5 * seq) for seq in range(4)] + [_result(seq, None) for seq in range(4, 12)]
    for r in results:
        stage.process(r)
    assert [r.ended_tracks.tolist() for r in results] == [[]] * 9 + [[1]] + [[]] * 2  # last seen on frame 3
    assert FrameResult(results[0].frame, results[0].detections, run_id="run-1").ended_tracks is None  # no tracker


def test_mot_rows_round_trip_through_text(tmp_path):
    dets = Detections(np.array([[10.5, 20.25, 50.5, 120.0], [0, 0, 5, 5]], np.float32),
                      np.array([0.9, 0.5], np.float32), np.zeros(2, np.int32), track_id=np.array([7, 3]))
    path = tmp_path / "out" / "seq.txt"
    mot.write_mot(path, mot.format_rows(12, dets))
    table = mot.read_mot(path)
    np.testing.assert_allclose(table[:, :7], [[12, 7, 10.5, 20.25, 40, 99.75, 0.9], [12, 3, 0, 0, 5, 5, 0.5]], atol=0.01)
    frames = dict(mot.frames_of(table, length=13))
    assert sorted(frames) == list(range(1, 14)) and len(frames[1]) == 0
    np.testing.assert_allclose(frames[12].xyxy, dets.xyxy, atol=0.01)


def test_bad_mot_file_names_file_and_line(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("1,-1,1,2,3,4,0.9\n2,-1,x,2,3,4,0.9\n")
    with pytest.raises(SourceError, match=r"det.txt:2"):
        mot.read_mot(path)


def test_mot_files_saved_with_a_byte_order_mark_read_as_without_one(tmp_path):
    """Windows tools (PowerShell 5's `Out-File -Encoding utf8`, Notepad before 2019) start UTF-8 files with one."""
    det, seqinfo = tmp_path / "det.txt", tmp_path / "seqinfo.ini"
    det.write_text("1,-1,1,2,3,4,0.9\n2,-1,5,6,7,8,0.8\n", encoding="utf-8-sig")
    seqinfo.write_text("[Sequence]\nname=cam\nframeRate=30\nseqLength=2\nimWidth=64\nimHeight=48\n",
                       encoding="utf-8-sig")
    assert mot.read_mot(det)[:, :7].tolist() == [[1, -1, 1, 2, 3, 4, 0.9], [2, -1, 5, 6, 7, 8, 0.8]]
    assert mot.read_seqinfo(seqinfo) == mot.SeqInfo("cam", 30.0, 2, 64, 48)


def test_interpolation_fills_short_gaps_only():
    table = np.array([[1, 1, 0, 0, 10, 10, 0.9], [4, 1, 30, 0, 10, 10, 0.8], [20, 1, 30, 0, 10, 10, 0.8]], float)
    filled = mot.interpolate_gaps(table, max_gap=5)
    assert filled[:, 0].tolist() == [1, 2, 3, 4, 20]
    assert filled[1:3, 2].tolist() == [10, 20]


def test_track_command_writes_scorable_results(tmp_path, capsys):
    det = tmp_path / "det.txt"
    rows = [f"{f},-1,{100 + 4 * f},100,40,100,0.9,-1,-1,-1" for f in range(1, 21)]
    rows += [f"{f},-1,{600 - 4 * f},300,40,100,0.8,-1,-1,-1" for f in range(1, 21)]
    det.write_text("\n".join(rows) + "\n")
    out = tmp_path / "res" / "seq.txt"
    assert track_command(["--det", str(det), "--out", str(out), "--set", "coast_frames=0"]) == 0
    table = mot.read_mot(out)
    assert sorted(np.unique(table[:, 1]).tolist()) == [1, 2]
    assert len(table) == 38  # both objects from their second frame on
    assert "20 frames, 2 tracks" in capsys.readouterr().out


def test_track_command_rejects_unknown_setting(tmp_path, capsys):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,2,3,4,0.9\n")
    assert track_command(["--det", str(det), "--out", str(tmp_path / "o.txt"), "--set", "speed=3"]) == 2
    assert "speed" in capsys.readouterr().err


def test_track_command_names_the_setting_a_misspelt_one_meant(tmp_path, capsys):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,2,3,4,0.9\n")
    assert track_command(["--det", str(det), "--out", str(tmp_path / "o.txt"), "--set", "hig_threshold=0.5"]) == 2
    assert "--set: hig_threshold: unknown key; did you mean 'high_threshold'?" in capsys.readouterr().err


@pytest.mark.parametrize("setting, why", [
    ("camera_motion=true", "--set camera_motion: `track` has detections, not pictures, to estimate the camera's"),
    ("enabled=false", "--set enabled: `track` always tracks"),
])
def test_track_command_refuses_a_setting_it_cannot_apply_instead_of_ignoring_it(setting, why, tmp_path, capsys):
    """camera_motion needs each frame's picture, which a det.txt does not have: the results were those without it,
    so a comparison with and without it showed no difference and said nothing."""
    pytest.importorskip("cv2")  # without OpenCV, camera_motion is refused for that already
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,2,3,4,0.9\n")
    assert track_command(["--det", str(det), "--out", str(tmp_path / "o.txt"), "--set", setting]) == 2
    assert capsys.readouterr().err.startswith(f"track: {why}")


def test_track_command_interpolates_a_missed_stretch_offline(tmp_path):
    det = tmp_path / "det.txt"
    frames = [f for f in range(1, 31) if not 10 <= f <= 17]  # the detector missed 8 frames
    det.write_text("".join(f"{f},-1,{100 + 4 * f},100,40,100,0.9,-1,-1,-1\n" for f in frames))
    online, offline = tmp_path / "online.txt", tmp_path / "offline.txt"
    assert track_command(["--det", str(det), "--out", str(online)]) == 0
    assert track_command(["--det", str(det), "--out", str(offline), "--interpolate", "10"]) == 0
    online_frames = mot.read_mot(online)[:, 0].tolist()
    table = mot.read_mot(offline)
    assert online_frames == list(range(2, 10)) + list(range(18, 31))  # matched rows only: a gap
    assert table[:, 0].tolist() == list(range(2, 31)) and set(table[:, 1]) == {1}
    np.testing.assert_allclose(table[table[:, 0] == 14, 2], [100 + 4 * 14], atol=1.0)


def test_track_command_writes_coasting_predictions_only_when_asked(tmp_path):
    det = tmp_path / "det.txt"
    frames = [f for f in range(1, 31) if not 10 <= f <= 17]
    det.write_text("".join(f"{f},-1,{100 + 4 * f},100,40,100,0.9,-1,-1,-1\n" for f in frames))
    out = tmp_path / "coasted.txt"
    assert track_command(["--det", str(det), "--out", str(out), "--include-coasted", "--set", "coast_frames=3"]) == 0
    table = mot.read_mot(out)
    assert table[:, 0].tolist() == list(range(2, 13)) + list(range(18, 31))  # 3 predicted frames in the gap
    assert table[np.isin(table[:, 0], [10, 11, 12]), 6].tolist() == [0, 0, 0]  # predictions carry score 0


def test_track_command_names_settings_that_disagree_with_each_other(tmp_path, capsys):
    """low_threshold above the default high_threshold: a check across settings, not of one value."""
    det = tmp_path / "det.txt"
    det.write_text("1,-1,1,2,3,4,0.9\n")
    assert track_command(["--det", str(det), "--out", str(tmp_path / "o.txt"), "--set", "low_threshold=0.6"]) == 2
    assert "--set: low_threshold: 0.6 is above high_threshold (0.4)" in capsys.readouterr().err


@pytest.mark.parametrize("dropped", [30, 31, 45, 1000])
def test_dropped_frames_end_tracks_as_frames_with_nothing_detected_would_however_long_the_gap(dropped):
    """A track unseen for more than max_lost_frames ends: a stall that drops 1,000 frames upstream is no exception."""
    dropping, seeing = TrackingStage(TrackerConfig()), TrackingStage(TrackerConfig())
    for seq in range(5):
        dropping.process(_result(seq, 100))
        seeing.process(_result(seq, 100))
    for seq in range(5, 5 + dropped):
        seeing.process(_result(seq, None))
    after_gap, after_empty = _result(5 + dropped, 100), _result(5 + dropped, 100)
    dropping.process(after_gap)
    seeing.process(after_empty)
    assert after_gap.detections.track_id.tolist() == after_empty.detections.track_id.tolist()
    assert dropping.tracker.active_track_ids.tolist() == seeing.tracker.active_track_ids.tolist()
    assert dropping.tracker.frame_count == seeing.tracker.frame_count == 6 + dropped
    if dropped > TrackerConfig().max_lost_frames:
        assert after_gap.ended_tracks.tolist() == [1]  # the object's old track ended on the frame after the gap


def test_an_object_first_seen_on_a_stream_that_drops_every_other_frame_is_tracked():
    """An overloaded pipeline drops frames of live cameras all the time: a new object must still become a track."""
    stage = TrackingStage(TrackerConfig())
    results = [_result(seq, 100 + 2 * seq) for seq in range(0, 20, 2)]  # walking 2 px a frame, 4 px between frames
    for r in results:
        stage.process(r)
    assert [r.detections.track_id.tolist() for r in results] == [[-1]] + [[1]] * 9  # confirmed on its second hit
