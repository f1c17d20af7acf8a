"""`run_pipeline.py bench` on the CPU with the demo model: ceilings, a ramp of paced cameras and the report."""
from __future__ import annotations

import dataclasses
import json
import sys
import threading
import types

import av
import numpy as np
import pytest

from pipeline.align.buffer import AlignedBuffer
from pipeline.bench.ceilings import decode_ceiling
from pipeline.bench.clips import camera_clip
from pipeline.bench.ramp import LiveRamp
from pipeline.cli import main
from pipeline.config.models import DetectorConfig, LaneConfig, PipelineConfig, StreamConfig
from pipeline.config.resolve import plan_stream, resolve
from pipeline.detect.detector import Detector
from pipeline.errors import SourceError
from tests.conftest import shared_file

MODEL = "samples/models/world_detector.onnx"


def test_bench_ramps_paced_cameras_and_writes_the_report(tmp_path, capsys):
    clip = shared_file("media/dog-848x464.mp4")
    out = tmp_path / "bench"
    status = main(["bench", "--model", MODEL, "--clip", str(clip), "--size", "320x180", "--fps", "5",
                   "--clip-seconds", "4", "--start", "1", "--max", "2", "--window-s", "2", "--settle-s", "0.5",
                   "--bound", "priority=1000", "--bound", "default=1000", "--decode-streams", "2",
                   "--batches", "1", "4", "--ceiling-seconds", "1", "--max-batch", "4", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["complete"] and report["cameras_in_real_time"] == 2  # 2 cameras of 5 frames/s with a 1 s bound hold anywhere
    first, second = report["ramp"]
    assert (first["cameras"], second["cameras"]) == (1, 2) and first["holds"] and second["holds"]
    assert second["lost"] == dict.fromkeys(second["lost"], 0) and second["frames_detected"] > 0
    assert set(second["latency_ms"]) == {"priority", "default"}  # camera 0 in the priority lane, camera 1 not
    assert 0 < second["latency_ms"]["priority"]["p50"] <= 1000 and second["latency_ms"]["priority"]["within_bound"] == 1
    for lane in ("priority", "default"):  # the latency split: waiting for a batch, then the detector's share
        waited, engine, latency = second["waited_ms"][lane], second["engine_ms"][lane], second["latency_ms"][lane]
        assert 0 < waited["p50"] <= latency["p50"] and 0 < engine["p50"] <= latency["p99"]
    assert report["at_90_percent"]["cameras"] == 1
    # one camera removed before that window: it opened once a second held again (waited only after a removal)
    assert report["at_90_percent"]["caught_up"] and 0 <= report["at_90_percent"]["catch_up_s"] < 120
    assert (first["catch_up_s"], second["catch_up_s"]) == (0.0, 0.0) and first["caught_up"] and second["caught_up"]
    assert [row["batch"] for row in report["engine_alone"]] == [1, 4]
    assert all(row["images_per_s"] > 0 for row in report["engine_alone"]) and report["decode_alone"]["fps"] > 0
    table = (out / "bench.md").read_text()
    assert report["only_a_floor"]  # --max 2 held: the machine was never seen to fail
    assert "# Real-time cameras: at least 2 (no larger count failed" in table and "| 2 | yes |" in table
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| cameras | holds |"))
    header, rule, row = lines[at:at + 3]
    assert rule.startswith("| ---") and row.startswith("| 1 | yes |")
    assert header.count("|") == rule.count("|") == row.count("|")  # every column has its rule and its cell
    assert (out / "bench.png").stat().st_size > 10_000
    assert "real-time cameras: at least 2 (no larger count failed" in capsys.readouterr().out


def test_a_bench_stopped_during_its_ramp_keeps_the_windows_it_measured(tmp_path, monkeypatch):
    measure, windows = LiveRamp.measure, []

    def stopped_at_the_second(self, window_s):  # Ctrl-C (or a time limit's SIGINT) during the second window
        if windows:
            raise KeyboardInterrupt
        windows.append(measure(self, window_s))
        return windows[-1]

    monkeypatch.setattr(LiveRamp, "measure", stopped_at_the_second)
    out = tmp_path / "bench"
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "--model", MODEL, "--clip", str(shared_file("media/dog-848x464.mp4")), "--size", "320x180",
              "--fps", "5", "--clip-seconds", "2", "--start", "1", "--max", "2", "--window-s", "1", "--settle-s", "0.2",
              "--decode-streams", "0", "--batches", "1", "--ceiling-seconds", "0.5", "--max-batch", "4",
              "--out", str(out)])
    report = json.loads((out / "bench.json").read_text())
    assert not report["complete"] and [row["batch"] for row in report["engine_alone"]] == [1]
    assert [step["cameras"] for step in report["ramp"]] == [1] and report["ramp"][0]["frames_detected"] > 0


def test_bench_refuses_a_missing_clip_naming_it(tmp_path, capsys):
    status = main(["bench", "--model", MODEL, "--clip", str(tmp_path / "nope.mp4"), "--out", str(tmp_path)])
    assert status == 2
    assert "nope.mp4: no such file" in capsys.readouterr().err


def test_the_decode_table_re_encodes_the_footage_one_setting_at_a_time(tmp_path, capsys):
    clip = shared_file("media/dog-848x464.mp4")
    out = tmp_path / "table"
    config = tmp_path / "one-lane.yaml"  # the table decodes only: a config without the ramp's lanes will do
    config.write_text(f"streams: []\ndetector: {{model: {MODEL}}}\n")
    status = main(["bench", str(config), "--clip", str(clip), "--size", "320x180", "--fps", "10",
                   "--clip-seconds", "1", "--decode-table", "--decode-streams", "1", "--ceiling-seconds", "0.5",
                   "--out", str(out)])
    assert status == 0
    rows = {row["variant"]: row for row in json.loads((out / "decode_table.json").read_text())}
    assert rows["3840x2160"]["size"] == "3840x2160" and rows["GOP 120"]["gop"] == 120
    assert rows["2 B-frames"]["bframes"] == 2 and rows["base"]["bframes"] == 0
    assert rows["8 Mbit/s"]["mbit_s"] > rows["2 Mbit/s"]["mbit_s"]
    assert all(row["fps"] > 0 and row["cameras_at_fps"] == int(row["fps"] // 10) for row in rows.values())
    with_b = next((out / "clips").glob("*-b2-*.mp4"))
    with av.open(str(with_b)) as container:  # B-frames: packets leave the decoder out of pts order
        pts = [p.pts for p in container.demux(video=0) if p.pts is not None]
    assert pts != sorted(pts)
    assert "| 3840x2160 | 3840x2160 |" in capsys.readouterr().out


def test_the_lane_most_cameras_are_in_has_a_latency_bound_whatever_its_name(tmp_path):
    """A config's lanes `priority` and `bulk`: the bulk lane's p99 is held to the 150-ms bound (else its
    latency could grow without bound and the count still hold)."""
    config = tmp_path / "lanes.yaml"
    config.write_text(f"streams: []\ndetector: {{model: {MODEL}}}\nlanes:\n  - {{name: priority, priority: 10}}\n"
                      "  - {name: bulk, max_batch: 4}\n")
    out = tmp_path / "bench"
    status = main(["bench", str(config), "--clip", str(shared_file("media/dog-848x464.mp4")), "--size", "320x180",
                   "--fps", "5", "--clip-seconds", "2", "--start", "2", "--max", "2", "--window-s", "1",
                   "--settle-s", "0.2", "--decode-streams", "0", "--batches", "1", "--ceiling-seconds", "0.2",
                   "--out", str(out)])
    assert status == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["bounds_ms"] == {"priority": 50, "bulk": 150}
    assert report["ramp"][0]["latency_ms"]["bulk"]["bound_ms"] == 150


def _flat_clip(path, level: int):
    """A 10-fps H.264 clip of 10 frames, every one a flat grey of `level`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            grey = np.full((48, 64, 3), level, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _mean_level(path) -> float:
    with av.open(str(path)) as container:
        return float(next(container.decode(video=0)).to_ndarray(format="rgb24").mean())


def test_footage_of_the_same_name_from_another_folder_is_re_encoded_not_taken_from_the_cache(tmp_path):
    """runs/clips is shared by every run without --out: site-a/entrance.mp4 then site-b/entrance.mp4 must not
    bench the first site's footage again."""
    dark = _flat_clip(tmp_path / "site-a" / "entrance.mp4", 40)
    bright = _flat_clip(tmp_path / "site-b" / "entrance.mp4", 200)
    first = camera_clip(dark, tmp_path / "clips", 64, 48, 10, seconds=1)
    second = camera_clip(bright, tmp_path / "clips", 64, 48, 10, seconds=1)
    assert abs(_mean_level(first) - 40) < 10 and abs(_mean_level(second) - 200) < 10
    assert camera_clip(bright, tmp_path / "clips", 64, 48, 10, seconds=1) == second  # cached once made


def test_the_decode_ceiling_batches_its_streams_in_the_lane_the_cameras_are_in(monkeypatch):
    """A config listing `default` before `priority`: the ramp's cameras (those not in `priority`) go to `default`,
    and so must the decode ceiling's streams, or they are batched with the priority lane's max_batch and wait."""
    lanes = []

    class Recording(AlignedBuffer):
        def next_batch(self, timeout):
            batch = super().next_batch(timeout)
            if batch is not None:
                lanes.append(batch.lane)
            return batch

    monkeypatch.setattr("pipeline.bench.ceilings.AlignedBuffer", Recording)
    clip = str(shared_file("media/dog-848x464.mp4"))
    config = PipelineConfig(streams=[], lanes=[LaneConfig(name="default", max_batch=4),
                                               LaneConfig(name="priority", priority=10, max_batch=2)],
                            detector=DetectorConfig(model=MODEL))
    plan = resolve(config.model_copy(update={"streams": [StreamConfig(id="d0", url=clip, loop=True)]}))
    result = decode_ceiling(config, plan, clip, 1, seconds=0.3, settle_s=0)
    assert result["fps"] > 0 and lanes and set(lanes) == {"default"}



class _NoDecoderLeft:
    """NVDEC as on a GPU whose decode sessions are all taken: creating one more decoder fails."""

    def __init__(self, *args, **kwargs):
        raise SourceError("cannot create a decoder: no NVDEC session left")


def _decode_ceiling_with_nvdec_for(monkeypatch, ids: set[str], streams: int) -> dict | SourceError:
    """decode_ceiling over `streams` copies of a clip, those in `ids` decoded by an NVDEC with no session left and
    the rest on the CPU; what it returned or raised, or a failed test when it has not ended within 60 s."""
    def planned(stream, plan, **kwargs):
        decoder = "nvdec" if stream.id in ids else "cpu"
        return dataclasses.replace(plan_stream(stream, plan, **kwargs), decoder=decoder, in_child=False)

    monkeypatch.setitem(sys.modules, "pipeline.sources.nvdec", types.SimpleNamespace(NvdecDecoder=_NoDecoderLeft))
    monkeypatch.setattr("pipeline.bench.ceilings.plan_stream", planned)
    clip = str(shared_file("media/dog-848x464.mp4"))
    config = PipelineConfig(streams=[], detector=DetectorConfig(model=MODEL))
    plan = resolve(config.model_copy(update={"streams": [StreamConfig(id="d0", url=clip, loop=True)]}))
    outcome = []

    def measure():
        try:
            outcome.append(decode_ceiling(config, plan, clip, streams, 0.3, settle_s=0))
        except SourceError as exc:
            outcome.append(exc)

    measuring = threading.Thread(target=measure, daemon=True)
    measuring.start()
    measuring.join(60)  # a bound, not a timing: it measures for 0.3 s once the streams that run have started
    assert not measuring.is_alive(), "the decode ceiling still waits for a stream that failed"
    return outcome[0]


def test_the_decode_ceiling_leaves_out_a_stream_whose_decoder_could_not_be_created(monkeypatch):
    """The GPU could not create a decoder for one more stream: that stream fails while the others run. The ceiling
    is measured over those that run and says which did not (it waited for them all to run, for ever)."""
    result = _decode_ceiling_with_nvdec_for(monkeypatch, {"d1"}, streams=2)
    assert (result["streams"], result["asked"]) == (1, 2) and result["fps"] > 0
    assert list(result["not_running"]) == ["d1"] and "no NVDEC session left" in result["not_running"]["d1"]


def test_a_decode_ceiling_where_no_stream_runs_is_refused_saying_why(monkeypatch):
    failure = _decode_ceiling_with_nvdec_for(monkeypatch, {"d0", "d1"}, streams=2)
    assert isinstance(failure, SourceError)
    assert "no stream of" in str(failure) and "no NVDEC session left" in str(failure)


def _fails(error: BaseException):
    def ceiling(*args, **kwargs):
        raise error

    return ceiling


@pytest.mark.parametrize("ceiling, error", [
    ("engine_ceiling", KeyboardInterrupt()),  # Ctrl-C while the engine runs alone
    ("decode_ceiling", SourceError("decode ceiling: no stream of x.mp4 ran")),
])
def test_a_bench_whose_ceilings_fail_or_are_interrupted_closes_its_detector(ceiling, error, tmp_path, monkeypatch):
    closed = []

    class Recorded(Detector):
        def close(self) -> None:
            closed.append(self)
            super().close()

    monkeypatch.setattr("pipeline.bench.cli.Detector", Recorded)
    monkeypatch.setattr(f"pipeline.bench.cli.{ceiling}", _fails(error))
    argv = ["bench", "--model", MODEL, "--clip", str(shared_file("media/dog-848x464.mp4")), "--size", "64x48",
            "--fps", "5", "--clip-seconds", "1", "--start", "1", "--max", "1", "--decode-streams", "1",
            "--batches", "1", "--ceiling-seconds", "0.2", "--out", str(tmp_path / "bench")]
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    else:
        assert main(argv) == 2
    assert len(closed) == 1


def test_a_camera_urls_credentials_are_masked_in_the_report(tmp_path):
    """bench.json and bench.md are shared (attached to issues, published): a camera's password is not in them."""
    from tests.support.http_camera import HttpCamera, make_media

    camera = HttpCamera(make_media(tmp_path / "media", seconds=4), credentials=("ops", "s3cret-pw")).start()
    try:
        out = tmp_path / "bench"
        status = main(["bench", "--model", MODEL, "--url", camera.url("video.mjpg"), "--start", "1", "--max", "1",
                       "--window-s", "1", "--settle-s", "0.2", "--decode-streams", "0", "--batches", "1",
                       "--ceiling-seconds", "0.2", "--out", str(out)])
    finally:
        camera.stop()
    assert status == 0
    written = (out / "bench.json").read_text() + (out / "bench.md").read_text()
    assert "s3cret-pw" not in written and "ops:" not in written
    assert json.loads((out / "bench.json").read_text())["camera"]["url"].startswith("http://***@127.0.0.1:")


@pytest.mark.parametrize("kind", ["garbage", "sound"])
def test_bench_refuses_a_clip_that_is_no_video_naming_it(kind, tmp_path, capsys):
    """Before, FFmpeg's error (or an IndexError for a file without a video stream) ended bench with a traceback."""
    clip = tmp_path / f"{kind}.mp4"
    if kind == "garbage":
        clip.write_bytes(bytes(range(256)) * 64)
    else:
        with av.open(str(clip), "w") as container:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    status = main(["bench", "--model", MODEL, "--clip", str(clip), "--out", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err
    assert f"bench: {clip}: " in err and "give a video file" in err
