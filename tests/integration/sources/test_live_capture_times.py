"""Live and paced streams through the real reader and worker: NVDEC's decode mode for each, and capture times
taken from each frame's own packets (a frame its decoder held, B-frames, a clock stepped back)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources import open_reader
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.pyav import PyAvReader
from pipeline.sources.reader import DecodedFrame
from pipeline.sources.worker import StreamWorker
from pipeline.types import pts_to_ns
from tests.conftest import shared_file


def first_frames(config: StreamConfig, sink, count: int) -> list:
    """The frames a worker of `config` hands `sink`, once it has handed at least `count` (it is stopped then)."""
    worker = StreamWorker(config, sink)
    worker.start()
    try:
        assert sink.wait_for(count, timeout=30), f"{len(sink.frames)} of {count} frames within 30 s"
    finally:
        worker.stop()
        worker.join(10)
    return sink.frames


@pytest.mark.parametrize(("keys", "low_latency"), [({"live": True}, True), ({"pace": True}, True), ({}, False)],
                         ids=["live", "paced", "as-fast"])
def test_nvdec_decodes_a_paced_stream_in_its_low_latency_mode_and_a_file_for_throughput(monkeypatch, keys, low_latency):
    """A stream whose frames come at their own pace (a camera, a paced file) must not have its pictures held back by
    NVDEC for throughput; a file read as fast as it decodes may. The choice is made where the decoder is made."""
    from pipeline.sources import nvdec  # noqa: PLC0415 - imports without the GPU stack

    made = []

    class Recorder:  # stands in for the GPU decoder, which this machine cannot create
        wants_annexb, reusable = True, False

        def __init__(self, stream, label, allocate=None, low_latency=False):
            made.append(low_latency)

        def decode(self, packet):
            return []

        def flush(self):
            return []

        def close(self):
            pass

    monkeypatch.setattr(nvdec, "NvdecDecoder", Recorder)
    url = str(shared_file("media/car-detection.mp4"))  # read as a camera when live: its end is the camera's
    assert list(open_reader(StreamConfig(id="cam", url=url, decode="nvdec", **keys), "nvdec").frames()) == []
    assert made == [low_latency]


class _Holding:
    """The CPU decoder holding each frame until `hold` more packets are in, as NVDEC does."""

    wants_annexb, reusable = False, False

    def __init__(self, stream, label, hold: int = 2):
        self._decoder, self._hold, self._waiting = CpuDecoder(stream, label), hold, []

    def decode(self, packet):
        self._waiting += self._decoder.decode(packet)
        ready, self._waiting = self._waiting[:-self._hold], self._waiting[-self._hold:]
        return ready

    def flush(self):
        ready, self._waiting = self._waiting + self._decoder.flush(), []
        return ready

    def close(self):
        self._decoder.close()


def test_a_live_frame_held_by_its_decoder_is_timed_from_its_own_packets_arrival():
    """The latency of a live frame starts when its packet came, not when the decoder let it go."""
    read_at: dict[int, int] = {}  # packet pts (ns) -> when the reader handed it to the tap, just after reading it
    config = StreamConfig(id="cam", url=str(shared_file("media/car-detection.mp4")), live=True)
    reader = PyAvReader(config, make_decoder=_Holding,
                        packet_tap=lambda _stream, packet: read_at.setdefault(pts_to_ns(packet.pts, packet.time_base),
                                                                             time.time_ns()))
    frames = list(reader.frames())
    order = sorted(read_at)  # no B-frames: display order is read order
    assert len(frames) == len(order) > 10
    for frame, pts in zip(frames, order):
        before = order.index(pts) - 1
        assert frame.arrived_ns <= read_at[pts]  # read before its tap, two packets before the decoder gave it
        assert before < 0 or frame.arrived_ns >= read_at[order[before]]


def test_live_frames_have_increasing_capture_times_with_b_frames(sink):
    """A B-frame's packet comes after the frame shown before it; its capture time still does not go back."""
    frames = first_frames(StreamConfig(id="cam", url=str(shared_file("media/dog-848x464.mp4")), live=True), sink, 96)
    walls = [f.wall_ns for f in frames[:96]]
    assert all(b > a for a, b in zip(walls, walls[1:]))


def test_the_worker_gives_a_held_live_frame_its_packets_time(sink, monkeypatch):
    """The frame the pipeline gets carries its packet's arrival, not the time its decoder handed it on."""
    read_at: dict[int, int] = {}

    def reader(config, decoder, packet_tap=None, allocate=None, shelf=None):
        return PyAvReader(config, make_decoder=_Holding, packet_tap=lambda _stream, packet: read_at.setdefault(
            pts_to_ns(packet.pts, packet.time_base), time.time_ns()))

    monkeypatch.setattr("pipeline.sources.worker.open_reader", reader)
    frames = first_frames(StreamConfig(id="cam", url=str(shared_file("media/car-detection.mp4")), live=True), sink, 100)
    first_pass = [f for f in frames if f.epoch == frames[0].epoch]  # a reconnect's frames are moved on
    assert len(first_pass) >= 100
    assert all(f.wall_ns <= read_at[f.pts_ns] for f in first_pass), "timed when the decoder let it go"


class _SteppedBack:
    """A live reader whose first frames' packets were read before the host clock stepped back a minute."""

    live = True

    def __init__(self, *_args, **_kwargs):
        pass

    def frames(self):
        step, now = 60 * 10**9, time.time_ns()
        for index in range(40):
            arrived = now + index * 1_000_000 + (step if index < 20 else 0)
            yield DecodedFrame(np.zeros((2, 2, 3), np.uint8), index * 33_333_333, 2, 2, arrived_ns=arrived)

    def counters(self):
        return {}

    def close(self):
        pass


def test_a_clock_stepped_back_does_not_hold_live_capture_times_ahead_of_it(sink, monkeypatch):
    monkeypatch.setattr("pipeline.sources.worker.open_reader", _SteppedBack)
    frames = first_frames(StreamConfig(id="cam", url="rtsp://camera.invalid/stream", live=True), sink, 40)
    assert max(f.wall_ns for f in frames) <= time.time_ns()
