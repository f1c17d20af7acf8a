"""SyntheticReader: a live camera made of the synthetic world."""
import threading
import time

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.types import Frame, frame_to_rgb
from samples.world import World
from samples.world.source import SyntheticReader


def test_yields_integer_pts_at_the_requested_size_and_stops_after_frames():
    reader = SyntheticReader("synthetic://junction?seed=2&fps=12&size=320x176&frames=5&realtime=0")
    frames = list(reader.frames())
    assert [f.pts_ns for f in frames] == [round(i * 1e9 / 12) for i in range(5)]
    assert all(type(f.pts_ns) is int for f in frames)
    assert all(f.image.shape == (176, 320, 3) and (f.width, f.height) == (320, 176) for f in frames)
    assert frames[0].pixel_format == "rgb24" and not reader.live
    assert np.array_equal(frames[3].image, World("junction", 2, (320, 176), 12).render(3)[0])


def test_realtime_stream_is_paced_on_the_wall_clock():
    now = [0.0]
    reader = SyntheticReader("synthetic://plaza?fps=20&size=160x96&frames=6", clock=lambda: now[0])
    waits = []

    class Clocked(threading.Event):
        def wait(self, timeout=None):  # time passes only while the reader waits for its next frame
            waits.append(timeout)
            now[0] += timeout
            return False

    reader._stop = Clocked()
    frames = list(reader.frames())
    assert reader.live and [f.pts_ns for f in frames] == [round(i * 1e9 / 20) for i in range(6)]
    assert len(waits) == 5 and abs(sum(waits) - 5 / 20) < 1e-9 and reader.skipped == 0


def test_a_late_consumer_skips_frames_like_a_live_camera():
    now = [0.0]
    reader = SyntheticReader("synthetic://plaza?fps=10&size=160x96", clock=lambda: now[0])
    it = reader.frames()
    assert next(it).pts_ns == 0
    now[0] = 1.05  # the consumer came back 1 s later: frame 10 is due
    assert next(it).pts_ns == round(10 * 1e9 / 10)
    assert reader.skipped == 9


def test_close_from_another_thread_ends_an_endless_stream():
    reader = SyntheticReader("synthetic://street?fps=5&size=160x96")
    threading.Timer(0.3, reader.close).start()
    start = time.monotonic()
    n = sum(1 for _ in reader.frames())
    assert 1 <= n <= 3 and time.monotonic() - start < 1.5


@pytest.mark.parametrize("url", ["synthetic://mars?seed=1", "synthetic://plaza?size=12x7",
                                 "synthetic://plaza?colour=red", "synthetic://plaza?fps=0"])
def test_bad_urls_raise_config_errors_that_name_the_url(url):
    with pytest.raises(ConfigError, match="synthetic://"):
        SyntheticReader(url)


def test_encoded_synthetic_camera_taps_h264_packets_and_hands_on_their_decoded_frames():
    packets = []
    url = "synthetic://street?seed=5&fps=10&size=320x176&frames=25&realtime=0&encode=1"
    reader = SyntheticReader(url, stream_id="cam-9", packet_tap=lambda sid, p: packets.append((sid, p)))
    frames = list(reader.frames())
    assert len(frames) == len(packets) == 25 and {sid for sid, _ in packets} == {"cam-9"}
    assert [i for i, (_, p) in enumerate(packets) if p.is_keyframe] == [0, 20]  # a keyframe every 2 s
    assert [f.pts_ns for f in frames] == [round(i * 1e9 / 10) for i in range(25)]
    rendered = World("street", 5, (320, 176), 10).render(7)[0].astype(np.float32)
    decoded = frame_to_rgb(Frame("cam-9", 7, frames[7].pts_ns, 0, frames[7].image, 320, 176, frames[7].pixel_format))
    psnr = 10 * np.log10(255**2 / np.mean((decoded.astype(np.float32) - rendered) ** 2))
    assert psnr > 25  # the same picture after H.264 at camera quality
