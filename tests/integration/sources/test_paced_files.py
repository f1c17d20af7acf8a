"""`pace: true`: a file played at its own rate, as a camera would send it (the benchmark's cameras). A paced
camera URL is refused: tests/integration/config/broken_configs.yaml, `pace-on-a-camera`."""
from __future__ import annotations

import time

import pytest

from pipeline.config.models import StreamConfig
from pipeline.errors import SourceError
from pipeline.sources.pyav import PyAvReader
from pipeline.sources.worker import StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.damaged_media import write_clip, write_leaping_ts

FRAMES = 20  # at 25 fps: 0.76 s from the first frame to the last
CLOCK_SLACK_NS = 2_000_000  # the wall clock against the monotonic one the pacing waits on


class TimedSink(CollectingSink):
    """Notes when each frame was handed over (`delivered`, wall clock ns, by seq)."""

    def __init__(self, room: int | None = None):
        super().__init__(room)
        self.delivered: dict[int, int] = {}

    def put(self, frame, timeout: float) -> bool:
        self.delivered[frame.seq] = time.time_ns()
        return super().put(frame, timeout)


def _run(config: StreamConfig, sink: CollectingSink) -> StreamWorker:
    worker = StreamWorker(config, sink)
    worker.start()
    assert worker.join(30), worker.stats()
    return worker


def test_a_paced_file_delivers_no_frame_before_its_moment_and_every_frame(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=FRAMES, size=(160, 96))
    sink = TimedSink()
    worker = _run(StreamConfig(id="cam", url=str(clip), pace=True, decode="cpu"), sink)
    assert worker.state is WorkerState.FINISHED
    frames = sink.frames
    assert len(frames) == FRAMES and [f.seq for f in frames] == list(range(FRAMES))
    first = frames[0]
    for frame in frames[1:]:  # capture times on the clip's clock; none delivered before its moment
        assert frame.wall_ns - first.wall_ns == frame.pts_ns - first.pts_ns
        assert sink.delivered[frame.seq] >= frame.wall_ns - CLOCK_SLACK_NS
    assert frames[-1].pts_ns - first.pts_ns == (FRAMES - 1) * 40_000_000


def test_a_paced_file_drops_and_counts_what_the_pipeline_has_no_room_for_as_a_camera_does(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=FRAMES, size=(160, 96))
    sink = CollectingSink(room=5)  # the buffer takes 5 frames and then never has room again
    worker = _run(StreamConfig(id="cam", url=str(clip), pace=True, decode="cpu"), sink)
    stats = worker.stats()
    assert worker.state is WorkerState.FINISHED
    assert len(sink.frames) == 5 and stats["dropped_sink"] == FRAMES - 5 and stats["sink_waits"] == 0
    assert [f.seq for f in sink.frames] == [0, 1, 2, 3, 4]  # refused frames leave gaps in seq after these


def test_a_paced_looping_file_keeps_its_pace_across_the_loop(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=8, size=(160, 96))
    sink = TimedSink()
    worker = StreamWorker(StreamConfig(id="cam", url=str(clip), pace=True, loop=True, decode="cpu"), sink)
    worker.start()
    try:
        assert sink.wait_for(20, timeout=30)
    finally:
        worker.stop()
        worker.join(10)
    first = sink.frames[0]
    for frame in sink.frames[1:20]:
        assert frame.wall_ns - first.wall_ns == frame.pts_ns - first.pts_ns > 0
        assert sink.delivered[frame.seq] >= frame.wall_ns - CLOCK_SLACK_NS
    assert worker.stats()["loops"] >= 2


def test_one_frame_an_hour_ahead_neither_moves_the_frames_after_it_nor_makes_a_paced_file_wait_the_hour(tmp_path):
    """It moved every later frame an hour on, and a paced file waited the hour before its next frame."""
    clip = write_leaping_ts(tmp_path / "leap.ts", frames=FRAMES, leap_at=8, leap_s=3600)
    for pace in (False, True):
        sink = CollectingSink()
        worker = _run(StreamConfig(id="cam", url=str(clip), pace=pace, decode="cpu"), sink)
        pts = [f.pts_ns for f in sink.frames]
        assert worker.state is WorkerState.FINISHED and len(pts) == FRAMES
        assert [b - a for a, b in zip(pts, pts[1:])] == [40_000_000] * (FRAMES - 1)
        assert worker.stats()["pts_repaired"] == 1


def test_a_frame_held_for_its_leap_still_comes_out_when_the_camera_goes_away_right_after_it(tmp_path, monkeypatch):
    """A camera that sends one frame after a stall and then stalls for good: its pass ends in an error, not at the
    end of its packets, and that frame, held to see whether its leap was one bad pts, must not die with it."""
    clip = write_leaping_ts(tmp_path / "leap.ts", frames=20, leap_at=8, leap_s=5)
    reader = PyAvReader(StreamConfig(id="cam", url=str(clip), decode="cpu"))
    packets = reader._demuxer.packets

    def gone_after_the_leap(each=None):
        for i, packet in enumerate(packets(each)):
            if i == 9:
                raise SourceError("stream 'cam': read failed: no frame for 5 s")
            yield packet

    monkeypatch.setattr(reader._demuxer, "packets", gone_after_the_leap)
    got = []
    with pytest.raises(SourceError, match="no frame for 5 s"):
        for decoded in reader.frames():
            got.append(decoded.pts_ns)
    assert len(got) == 9 and got[-1] - got[-2] > 4 * 10**9  # the frame after the stall, its leap kept
