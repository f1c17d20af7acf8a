"""Event clips cut by a real worker's packet rings in every pass of a stream: a looped file's later passes, a
camera's first GOP and its last moments before it goes down (a real gst-rtsp-server), an MJPEG camera timed by
arrival, and none of another moment after a recording's clock jumps back."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import replace

import av
import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources.packets import PacketRings
from pipeline.sources.worker import StreamWorker
from pipeline.types import frame_to_rgb
from tests.integration.sources.test_packet_rings import Reports, decode_all, frame_index, make_h264
from tests.support.collecting_sink import CollectingSink
from tests.support.http_camera import HttpCamera, make_media
from tests.support.http_server import free_port
from tests.support.rtsp_server import RtspServer, gst_rtsp_available


@pytest.fixture
def car_camera(shared):
    """car-detection.mp4 (12.5 fps, no B-frames, a keyframe every 60 frames) served once over RTSP."""
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    source = shared("media/car-detection.mp4")
    server = RtspServer(source, free_port()).start()
    yield server, source
    server.kill()


def pictures(path, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), start, stop)]


def same_pictures(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@contextlib.contextmanager
def reading(config: StreamConfig, sink, rings: PacketRings):
    """A worker reading `config` into `sink`, its packets into `rings`; stopped, and the rings closed (their clips
    written), on leaving."""
    worker = StreamWorker(config, sink, packets=rings)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        assert worker.join(5)
        rings.close()


def camera_config(url: str) -> StreamConfig:
    return StreamConfig(id="cam-1", url=url, decode="cpu", reconnect_min_s=0.2, reconnect_max_s=1.0,
                        open_timeout_s=3.0, read_timeout_s=3.0)


def test_clip_of_an_event_in_a_looped_files_second_pass_shows_that_event(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=80, gop=10)  # 8 s at 10 fps
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings = PacketRings(keep_s=2.0 + 5.0)
    sink = CollectingSink(room=80 + 75)  # the worker then waits in the second pass, after its frame 74
    with reading(StreamConfig(id="cam-1", url=str(source), loop=True, decode="cpu"), sink, rings):
        assert sink.wait_for(80 + 75, timeout=20)
        event = sink.frames[80 + 45]  # at 12.5 s on the stream's timeline; its packet at 4.5 s of the file
        assert (event.epoch, event.index) == (1, 45)
        assert rings.record_clip("cam-1", event.pts_ns, 2.0, 2.0, clip, reports)
    assert reports.done == [(clip, None)]
    # the same clip as the first pass gives (test_packet_rings): the keyframe at 2.0 s to 6.5 s
    assert [frame_index(f) for f in decode_all(clip)] == list(range(20, 67))


def test_clip_of_an_event_in_a_cameras_first_gop_starts_at_the_connections_first_keyframe(tmp_path, car_camera):
    """FFmpeg gives an RTSP connection's first packet, its IDR, without timestamps."""
    server, source = car_camera
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings, sink = PacketRings(keep_s=1.0 + 5.0), CollectingSink()
    with reading(camera_config(server.url), sink, rings):
        assert sink.wait_for(20, timeout=20)
        event = sink.frames[5]  # 0.4 s, long before the second keyframe (4.8 s)
        assert rings.record_clip("cam-1", event.pts_ns, 1.0, 0.5, clip, reports)
        assert reports.wait_for(1)
    assert reports.done == [(clip, None)]
    # from the IDR (frame 0) to the first frame at or after 0.9 s (frame 12, 0.96 s), as the file has them
    assert same_pictures(pictures(clip), pictures(source, 0, 13))


def test_clip_of_an_event_just_before_a_camera_goes_down_is_written_while_it_stays_down(tmp_path, car_camera):
    server, source = car_camera
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings, sink = PacketRings(keep_s=1.0 + 5.0), CollectingSink()
    with reading(camera_config(server.url), sink, rings):
        assert sink.wait_for(70, timeout=20)  # past the second keyframe (frame 60, 4.8 s)
        event = sink.frames[65]
        assert rings.record_clip("cam-1", event.pts_ns, 0.1, 30.0, clip, reports)  # ends long after the outage
        server.kill()
        assert reports.wait_for(1, timeout=15)  # the camera is still down, the worker still running
    assert reports.done == [(clip, None)]
    got = pictures(clip)  # from the keyframe at 4.8 s to the last frame the camera sent
    assert len(got) > 65 - 60 and same_pictures(got, pictures(source, 60, 60 + len(got)))


def test_event_after_the_streams_clock_jumped_back_within_a_pass_gets_no_clip_of_another_moment(tmp_path, caplog):
    """Two MPEG-TS recordings back to back (an encoder restarted mid-stream): the second one's timestamps start
    again, and the reader joins its frames on after the first one's."""
    first, second = (make_h264(tmp_path / f"{name}.ts", frames=40, gop=10) for name in ("a", "b"))
    source = tmp_path / "joined.ts"
    source.write_bytes(first.read_bytes() + second.read_bytes())
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings, sink = PacketRings(keep_s=2.0 + 5.0), CollectingSink(room=75)
    with reading(StreamConfig(id="cam-1", url=str(source), decode="cpu"), sink, rings):
        assert sink.wait_for(75, timeout=20)
        event = sink.frames[60]  # the second recording's frame 20
        assert not rings.record_clip("cam-1", event.pts_ns, 1.0, 1.0, clip, reports)
    assert not clip.exists() and reports.done == []
    assert "their clock jumping back" in caplog.text


def test_clip_of_an_mjpeg_camera_timed_by_arrival_is_of_its_events_moment(tmp_path):
    """An MJPEG camera sending 10 JPEGs a second, which FFmpeg stamps at a guessed 25: the frames are timed by
    their arrival, and so must the clip's packets be, or the clip is of another stretch (or none)."""
    camera = HttpCamera(replace(make_media(tmp_path / "media", seconds=1), fps=10)).start()
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings = PacketRings(keep_s=1.0 + 5.0)
    sink = CollectingSink(room=40)
    try:
        with reading(camera_config(camera.url("video.mjpg")), sink, rings):
            assert sink.wait_for(40, timeout=20)
            event = sink.frames[25]  # 2.5 s in
            assert rings.record_clip("cam-1", event.pts_ns, 1.0, 1.0, clip, reports)
    finally:
        camera.stop()
    assert reports.done == [(clip, None)]
    shown = [frame_to_rgb(f) for f in sink.frames]
    written = decode_all(clip)
    first = next(i for i, picture in enumerate(shown) if np.array_equal(picture, written[0].to_ndarray(format="rgb24")))
    assert 13 <= first <= 16 and 19 <= len(written) <= 23  # 1 s either side of the event, at 10 frames a second
    assert same_pictures([f.to_ndarray(format="rgb24") for f in written], shown[first:first + len(written)])
    assert (written[-1].time - written[0].time) == pytest.approx((len(written) - 1) / 10, abs=0.15)  # its own pace
