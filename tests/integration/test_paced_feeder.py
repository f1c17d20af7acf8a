"""The benchmark's paced feeder (pipeline.bench.feeder): cameras as live MPEG-TS over HTTP, each packet sent
at its moment and stamped with it, read by PyAV and by the pipeline's own HTTP source."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import av
import pytest

from pipeline.bench.feeder import PacedFeeder
from pipeline.config.models import StreamConfig
from pipeline.sources.worker import StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.damaged_media import write_clip

FRAME_NS = 40_000_000  # the clip is 25 fps


@pytest.fixture
def feeder(tmp_path):
    feeder = PacedFeeder(write_clip(tmp_path / "clip.mp4", frames=10, size=(160, 96))).start()
    yield feeder
    feeder.close()


def test_frames_arrive_no_earlier_than_the_moment_their_timestamps_say_they_were_sent(feeder):
    seen = []
    with av.open(feeder.url("cam-a")) as container:
        for frame in container.decode(video=0):
            seen.append((feeder.capture_ns(frame.pts, frame.time_base), time.time_ns()))
            if len(seen) == 25:  # past the end of the 10-frame clip: it loops
                break
    captures = [capture for capture, _ in seen]
    steps = [b - a for a, b in zip(captures, captures[1:], strict=False)]
    assert steps == [FRAME_NS] * 24  # one frame period apart on the camera's clock
    assert all(arrived >= capture for capture, arrived in seen)  # decoded after it was sent
    assert feeder.sent("cam-a") >= 25 and feeder.sent("cam-b") == 0


def test_the_pipeline_reads_a_feeder_camera_as_a_live_stream(feeder):
    sink = CollectingSink()
    config = StreamConfig(id="cam", url=feeder.url("cam-p"), decode="cpu")
    assert config.is_live
    worker = StreamWorker(config, sink)
    worker.start()
    try:
        assert sink.wait_for(15, timeout=30), worker.stats()
        assert worker.state is WorkerState.RUNNING
    finally:
        worker.stop()
        worker.join(10)
    pts = [frame.pts_ns for frame in sink.frames[:15]]
    assert [b - a for a, b in zip(pts, pts[1:], strict=False)] == [FRAME_NS] * 14  # the feeder's clock


def test_a_path_that_is_not_a_camera_is_refused(feeder):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{feeder.host}:{feeder.port}/", timeout=5)
    assert refused.value.code == 404


def test_a_camera_says_where_its_stream_began_for_readers_that_count_from_there(feeder):
    """OpenCV reports positions from the stream's start; `/<name>.start` gives that start, so
    epoch + start + position is the capture time a reader of absolute timestamps (PyAV) sees."""
    start_url = feeder.url("cam-s").removesuffix(".ts") + ".start"
    with pytest.raises(urllib.error.HTTPError):  # not streaming yet
        urllib.request.urlopen(start_url, timeout=5)
    with av.open(feeder.url("cam-s")) as container:
        frames = [frame for _, frame in zip(range(3), container.decode(video=0), strict=False)]
        with urllib.request.urlopen(start_url, timeout=5) as reply:
            start_ns = int(reply.read())
        stream_start_s = container.start_time / 1_000_000  # FFmpeg's start time, which OpenCV subtracts
    first = frames[0]
    assert start_ns == round(first.pts * first.time_base * 1_000_000_000)
    for frame in frames:
        from_start = (frame.pts * frame.time_base - stream_start_s) * 1_000_000_000
        assert abs(feeder.epoch_ns + start_ns + from_start - feeder.capture_ns(frame.pts, frame.time_base)) < 20_000
