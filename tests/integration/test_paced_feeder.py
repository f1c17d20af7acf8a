"""The benchmark's paced feeder (pipeline.bench.feeder): cameras as live MPEG-TS over HTTP, each packet sent
at its moment and stamped with it, read by PyAV, by OpenCV (as the Ultralytics peer reads it) and by the
pipeline's own HTTP source."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from benchmarks.peers.common import position_capture_ns, stream_start_ns
from pipeline.bench.feeder import PacedFeeder
from pipeline.config.models import StreamConfig
from pipeline.errors import SourceError
from pipeline.sources.worker import StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.damaged_media import write_clip

FRAME_NS = 40_000_000  # the clip is 25 fps
NUMBERED = 10  # frames of the numbered clip


def numbered_clip(path):
    """A 25-fps H.264 clip whose frame k is a flat grey of level 20 + 20 k: a reader tells which it decoded."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for k in range(NUMBERED):
            grey = np.full((96, 160, 3), 20 + 20 * k, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def clip_frame(image) -> int:
    return round((float(image.mean()) - 20) / 20)


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


def read_as_ultralytics_does(url: str, epoch_ns: int, frames: int):
    """OpenCV as LoadStreams reads a camera (open, one read, then grab and retrieve) with the peer's capture
    times: the first image, OpenCV's timestamp of it (whole frames), the camera's start, and per frame after
    it (clip frame, capture ns)."""
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, first = capture.read()
        assert ok
        first_pts_frames = capture.get(cv2.CAP_PROP_PTS)
        start_ns = stream_start_ns(url)
        seen = []
        for _ in range(frames):
            assert capture.grab()
            ok, image = capture.retrieve()
            assert ok
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            seen.append((clip_frame(image), position_capture_ns(epoch_ns, start_ns, position_ms)))
    finally:
        capture.release()
    return first, first_pts_frames, start_ns, seen


def test_opencv_positions_from_the_camera_start_are_the_feeder_send_times(tmp_path):
    """The Ultralytics peer's capture time, epoch + `/<camera>.start` + CAP_PROP_POS_MSEC, is the moment the
    feeder sent the frame, for a reader that connects while the feeder has been streaming the camera a while:
    the connection gets the clip from its first frame, and OpenCV counts positions from that frame."""
    feeder = PacedFeeder(numbered_clip(tmp_path / "numbered.mp4")).start()
    try:
        url = feeder.url("cam-o")
        with av.open(url) as earlier:  # an earlier connection to the same camera, gone 8 frames into the clip
            frames = [frame for _, frame in zip(range(8), earlier.decode(video=0), strict=False)]
        first, first_pts_frames, start_ns, seen = read_as_ultralytics_does(url, feeder.epoch_ns, 2 * NUMBERED)
    finally:
        feeder.close()
    assert [clip_frame(frame.to_ndarray(format="rgb24")) for frame in frames] == list(range(8))
    assert clip_frame(first) == 0  # the new connection starts at the clip's start, not where the earlier one was
    assert abs(start_ns - first_pts_frames * FRAME_NS) <= FRAME_NS / 2  # the start is this connection's
    assert [index for index, _ in seen] == [k % NUMBERED for k in range(1, 2 * NUMBERED + 1)]  # the clip loops
    # frame k of the connection is sent k frame periods after its first frame, whose pts is the start
    sent = [feeder.capture_ns(start_ns + k * FRAME_NS, Fraction(1, 1_000_000_000)) for k in range(1, 2 * NUMBERED + 1)]
    assert max(abs(computed - moment) for (_, computed), moment in zip(seen, sent, strict=True)) < 1_000_000


def ts_clip(path, periods_ms: list[int]):
    """An MPEG-TS H.264 clip of frames `periods_ms` apart: its packets carry no duration, and its video states an
    average frame rate only when the periods are all equal."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for k, period in enumerate(periods_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * k, dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += period
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_a_clip_whose_packets_carry_no_duration_is_sent_at_its_own_rate(tmp_path):
    """MPEG-TS packets carry no duration: a 10-fps clip is sent 100 ms apart, not at a built-in 30 fps."""
    clip = ts_clip(tmp_path / "ten-fps.ts", [100] * 12)
    with av.open(str(clip)) as container:
        assert not any(packet.duration for packet in container.demux(video=0))
    feeder = PacedFeeder(clip).start()
    try:
        with av.open(feeder.url("cam-t")) as container:
            frames = [frame for _, frame in zip(range(6), container.decode(video=0), strict=False)]
    finally:
        feeder.close()
    captures = [feeder.capture_ns(frame.pts, frame.time_base) for frame in frames]
    assert [b - a for a, b in zip(captures, captures[1:], strict=False)] == [100_000_000] * 5


def test_a_clip_with_no_rate_to_pace_it_by_is_refused_naming_it(tmp_path):
    clip = ts_clip(tmp_path / "uneven.ts", [150, 100] * 6)  # no average rate stated, no packet durations
    with pytest.raises(SourceError, match="uneven.ts: cannot pace it"):
        PacedFeeder(clip)
