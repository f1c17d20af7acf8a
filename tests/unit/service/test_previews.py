"""Console previews: nothing is done for a camera nobody watches; a watched one is sampled at a bounded rate
from a small copy of its picture, whatever form the decoder left the picture in."""
from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from pipeline.service.previews import Previews, small_rgb
from pipeline.types import Detections, Frame, FrameResult


def picture(width: int, height: int) -> np.ndarray:
    """A smooth RGB gradient (chroma subsampling barely changes it)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    return np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)


def frame(image, fmt: str, width: int, height: int, seq: int = 0) -> Frame:
    return Frame("cam", seq, seq * 100_000_000, seq, image, width, height, pixel_format=fmt)


@pytest.mark.parametrize("fmt", ["rgb24", "nv12", "avframe"])
def test_a_small_copy_is_decimated_from_any_picture_form(fmt):
    rgb = picture(640, 360)
    image = {"rgb24": rgb,
             "nv12": av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray(),
             "avframe": av.VideoFrame.from_ndarray(rgb, format="rgb24")}[fmt]
    small = small_rgb(frame(image, fmt, 640, 360), 160)
    assert small.shape == (90, 160, 3) and small.dtype == np.uint8
    error = np.abs(small.astype(int) - rgb[::4, ::4].astype(int))
    assert np.median(error) <= 6, fmt


def test_a_nv12_picture_of_awkward_size_still_gives_an_even_picture():
    nv12 = np.zeros((15, 10), np.uint8)  # 10 x 10, as a decoder lays it out
    small = small_rgb(frame(nv12, "nv12", 10, 10), 3)
    assert small.shape[0] % 2 == 0 and small.shape[1] % 2 == 0 and small.shape[1] >= 2


def results(count: int):
    rgb = picture(64, 48)
    dets = Detections(np.array([[8, 8, 24, 40]], np.float32), np.array([0.9], np.float32), np.array([2], np.int32))
    for seq in range(count):
        yield FrameResult(frame(rgb, "rgb24", 64, 48, seq), dets, run_id="run")


def test_nothing_is_taken_or_encoded_for_cameras_nobody_watches():
    previews = Previews(["person", "bicycle", "car"], fps=1000)
    try:
        got = []
        previews.watch({"other": 32}, got.append)
        for result in results(50):
            previews.tap(result)
        assert previews.encoded == 0 and got == []
    finally:
        previews.close()


def test_a_watched_camera_is_sampled_at_most_fps_times_a_second():
    previews = Previews(["person", "bicycle", "car"], fps=0.001)  # one preview, then none for 1000 s
    delivered = threading.Event()
    got = []
    try:
        previews.watch({"cam": 32}, lambda p: (got.append(p), delivered.set()))
        for result in results(50):
            previews.tap(result)
        assert delivered.wait(10)
        (preview,) = got
        assert (preview.seq, preview.width, preview.height) == (0, 32, 24)
        assert preview.boxes == [{"xyxy": [8.0, 8.0, 24.0, 40.0], "class": "car", "track_id": -1, "score": 0.9,
                                  "coasted": False}]
        assert preview.jpeg[:2] == b"\xff\xd8"
    finally:
        previews.close()
    assert previews.encoded == 1


def test_a_watcher_asking_wider_never_gets_a_picture_taken_narrower_before_it_came():
    previews = Previews(["person", "bicycle", "car"], fps=1e6)  # every tap is due
    entered, hold, two, wide = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    narrow_got, wide_got = [], []

    def narrow(preview):  # the first delivery holds the encode thread while a picture waits and a wide watch comes
        narrow_got.append(preview)
        entered.set()
        if len(narrow_got) == 2:
            two.set()
        hold.wait(10)

    try:
        previews.watch({"cam": 16}, narrow)
        first, second, third = results(3)
        previews.tap(first)
        assert entered.wait(10)
        previews.tap(second)  # taken 16 wide, waiting to be encoded
        previews.watch({"cam": 48}, lambda p: (wide_got.append(p), wide.set()))
        hold.set()
        assert two.wait(10)  # the waiting picture went to the narrow watch (and, had it been sent, to the wide)
        deadline = time.monotonic() + 10
        while not wide.is_set() and time.monotonic() < deadline:  # taken 48 wide now
            previews.tap(third)
            wide.wait(0.05)
        assert [p.width for p in wide_got] == [48] * len(wide_got) and wide_got[0].seq == 2
        assert [(p.seq, p.width) for p in narrow_got[:2]] == [(0, 16), (1, 16)]
    finally:
        hold.set()
        previews.close()


def test_a_camera_nobody_watches_any_more_leaves_nothing_behind_and_a_new_watch_gets_a_picture_at_once():
    previews = Previews(["person", "bicycle", "car"], fps=0.001)  # one preview, then none for 1000 s
    got = []
    delivered = threading.Semaphore(0)
    try:
        for _ in range(2):  # a camera removed, then one of the same id added: watched again
            watch = previews.watch({"cam": 32}, lambda p: (got.append(p), delivered.release()))
            for result in results(3):
                previews.tap(result)
            assert delivered.acquire(timeout=10)
            previews.unwatch(watch)
            assert previews._due == {}, "the camera's preview timing is kept after nobody watches it"
        assert len(got) == 2
    finally:
        previews.close()
