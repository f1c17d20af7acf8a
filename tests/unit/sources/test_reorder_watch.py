"""What a camera's H.264 decoder does with each packet while it declares the stream free of reordering
(`ReorderWatch`): the plans for streams with and without B-frames, looped passes, clock leaps and packets without
timestamps. The packets are real: car-detection.mp4's, whose SPS does not state its order."""
from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline.sources.demux import Demuxer
from pipeline.sources.h264 import parse
from pipeline.sources.nvdec import sequence_parameter_set
from pipeline.sources.reorder import REORDER_SPAN, TRIAL_PACKETS, ReorderWatch
from tests.conftest import shared_file

MS = Fraction(1, 1000)


@pytest.fixture(scope="module")
def units() -> list[bytes]:
    demuxer = Demuxer(str(shared_file("media/car-detection.mp4")), "clip")
    demuxer.open()
    try:
        return [bytes(p) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True) if p.size]
    finally:
        demuxer.close()


class Decoder:
    """Plays the decoder's part: follows each plan and hands on every picture at once (what NVDEC does with a
    declared SPS), dropping after a restart the pictures up to the plan's floor as NvdecDecoder does, and reports
    each one shown; records what it fed and each restart."""

    def __init__(self, watch: ReorderWatch):
        self.watch, self.fed, self.shown, self.restarts = watch, [], [], []
        self.floor = None

    def read(self, unit: bytes, pts: int | None) -> None:
        plan = self.watch.read(memoryview(unit), sequence_parameter_set(unit, "h264"), pts, MS, False)
        if plan.restart:
            self.restarts.append((len(self.fed), plan.restart))
            self.floor = plan.floor_ns
        for data, at, _ in plan.feed:
            self.fed.append((bytes(data), at))
            if at is None:
                continue
            if self.floor is not None and at * 1_000_000 <= self.floor:
                continue
            self.floor = None
            self.shown.append(at)
            self.watch.shown(at * 1_000_000)


def _declared(data: bytes) -> bool | None:
    sps = sequence_parameter_set(data, "h264")
    return None if sps is None else parse(sps).max_num_reorder_frames == 0


def test_a_stream_without_b_frames_is_declared_at_every_sps_and_never_decoded_again(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for index, unit in enumerate(units):
        decoder.read(unit, 40 * index)
    assert decoder.restarts == []
    assert [at for _, at in decoder.fed] == [40 * i for i in range(len(units))]
    carrying = [_declared(data) for data, _ in decoder.fed if _declared(data) is not None]
    assert len(carrying) == sum(sequence_parameter_set(u, "h264") is not None for u in units) > 1 and all(carrying)
    assert decoder.watch.declaring


def test_a_stream_not_eligible_is_passed_through_untouched(units):
    decoder = Decoder(ReorderWatch("cam", eligible=False))
    for index, unit in enumerate(units[:40]):
        decoder.read(unit, 40 * index)
    assert [data for data, _ in decoder.fed] == units[:40]


def test_b_frames_within_the_trial_decode_again_from_the_sps_without_repeating_a_picture(units):
    # decode order I0 P3 B1 B2 P6 B4 B5 ...: the first step back is at the third packet
    order = [0] + [p for k in range(0, 60, 3) for p in (k + 3, k + 1, k + 2)]
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for unit, frame in zip(units, order):
        decoder.read(unit, 40 * frame)
    assert decoder.restarts == [(2, "drop")]
    replayed = decoder.fed[2:5]
    assert [at for _, at in replayed] == [0, 120, 40]  # from the SPS again, as read
    assert replayed[0][0] == units[0]  # with the stream's own SPS
    assert decoder.shown[:2] == [0, 120] and 40 not in decoder.shown  # B1 dropped: it belongs before P3, shown
    assert 80 not in decoder.shown  # and B2, decoded after the restart: below the floor too
    assert len(decoder.shown) == len(set(decoder.shown))
    assert not decoder.watch.declaring
    assert all(not _declared(data) for data, _ in decoder.fed[2:] if _declared(data) is not None)


def test_a_packet_without_a_timestamp_in_the_trial_stops_the_declaration(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    decoder.read(units[0], 0)
    decoder.read(units[1], None)
    assert decoder.restarts == [(1, "drop")] and not decoder.watch.declaring
    assert [at for _, at in decoder.fed] == [0, 0, None]


def test_a_looped_pass_starts_its_timestamps_and_its_trial_again(units):
    watch = ReorderWatch("cam", eligible=True)
    decoder = Decoder(watch)
    for _ in range(3):  # a 20-packet clip, shorter than the trial, looped
        for index, unit in enumerate(units[:20]):
            decoder.read(unit, 40 * index)
        watch.end()
    assert decoder.restarts == [] and watch.declaring
    assert decoder.shown == [40 * i for i in range(20)] * 3


def test_a_clock_leap_back_after_the_trial_is_not_taken_for_reordering(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    times = [40 * i for i in range(TRIAL_PACKETS + 10)] + [40 * i - 10_000 for i in range(10)]
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [] and decoder.watch.declaring
    assert decoder.shown == times


def test_b_frames_that_start_late_end_the_declaration_at_the_next_sps(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    start = TRIAL_PACKETS + 5
    # then P B P B in decode order: two steps back within a few packets
    times = [40 * i for i in range(start)] + [40 * (start + 1), 40 * start, 40 * (start + 3), 40 * (start + 2)]
    stream = units[: start + 4] + [units[0]]  # then the SPS again (the next IDR)
    for unit, at in zip(stream, times + [40 * (start + 4)]):
        decoder.read(unit, at)
    assert not decoder.watch.declaring
    assert decoder.restarts == [(start + 4, "drain")]
    assert not _declared(decoder.fed[-1][0])  # the stream's own SPS from there on


def test_one_small_step_back_after_the_trial_is_jitter_not_reordering(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    times = [40 * i for i in range(TRIAL_PACKETS + 5)] + [40 * (TRIAL_PACKETS + 5) - 50]
    times += [times[-1] + 40 * (i + 1) for i in range(REORDER_SPAN + 2)] + [times[-1] + 40 * (REORDER_SPAN + 2) - 10]
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [] and decoder.watch.declaring  # two steps back, but not within REORDER_SPAN packets


def test_reordering_seen_at_a_packet_with_the_sps_restarts_there(units):
    sps_at = next(i for i, u in enumerate(units) if i > TRIAL_PACKETS + 2 and sequence_parameter_set(u, "h264"))
    times = [40 * i for i in range(sps_at + 1)]
    for first in (sps_at - 3, sps_at - 1):  # two B-frames after their P; the second step back lands on the SPS
        times[first], times[first + 1] = times[first + 1], times[first]
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [(sps_at, "drain")]
    assert not _declared(decoder.fed[sps_at][0])


def test_a_stream_whose_sps_needs_no_declaration_is_never_restarted(shared):
    demuxer = Demuxer(str(shared("media/dog-phone-1080p.mp4")), "phone")  # order count type 2: nothing to declare
    demuxer.open()
    phone = [bytes(p) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True) if p.size]
    demuxer.close()
    decoder = Decoder(ReorderWatch("phone", eligible=True))
    for index, unit in enumerate(phone):
        decoder.read(unit, 40 * index - (15 if index % 3 == 2 else 0))  # steps back every third packet
    assert decoder.restarts == [] and [data for data, _ in decoder.fed] == phone
