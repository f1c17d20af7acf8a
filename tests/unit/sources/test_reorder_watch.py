"""What a camera's H.264 decoder does with each packet while it declares the stream free of reordering
(`ReorderWatch`): the plans for streams with and without B-frames, looped passes, clock leaps, packets without
timestamps, and cameras that repeat their parameter sets before every picture or send them only in their SDP. The
packets are real: car-detection.mp4's, whose SPS does not state its order (an IDR picture every 60 packets)."""
from __future__ import annotations

from fractions import Fraction

import av
import pytest

from pipeline.sources.demux import Demuxer
from pipeline.sources.h264 import parse
from pipeline.sources.nal import ParameterSets, headers
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
    declared SPS), dropping after a restart the pictures up to the plan's floor and putting the stream's parameter
    sets before a fresh decoder's first unit as NvdecDecoder does, and reports each one shown; records what it fed
    and each restart."""

    def __init__(self, watch: ReorderWatch):
        self.watch, self.fed, self.shown, self.restarts = watch, [], [], []
        self.floor, self.sets, self.fresh = None, ParameterSets("h264"), False

    def read(self, unit: bytes, pts: int | None) -> None:
        head = headers(unit, "h264")
        self.sets.note(head)
        plan = self.watch.read(memoryview(unit), head, pts, MS, False)
        if plan.restart:
            self.restarts.append((len(self.fed), plan.restart))
            self.floor, self.fresh = plan.floor_ns, True
        for data, at, _ in plan.feed:
            if self.fresh:
                data, self.fresh = self.sets.before(data), False
            self.fed.append((bytes(data), at))
            if at is None:
                continue
            if self.floor is not None and at * 1_000_000 <= self.floor:
                continue
            self.floor = None
            self.shown.append(at)
            self.watch.shown(at * 1_000_000)


def _declared(data: bytes) -> bool | None:
    sps = headers(data, "h264").sps
    return None if sps is None else parse(sps).max_num_reorder_frames == 0


def test_a_stream_without_b_frames_is_declared_at_every_sps_and_never_decoded_again(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for index, unit in enumerate(units):
        decoder.read(unit, 40 * index)
    assert decoder.restarts == []
    assert [at for _, at in decoder.fed] == [40 * i for i in range(len(units))]
    carrying = [_declared(data) for data, _ in decoder.fed if _declared(data) is not None]
    assert len(carrying) == sum(headers(u, "h264").sps is not None for u in units) > 1 and all(carrying)
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


def test_b_frames_that_start_late_end_the_declaration_at_the_next_idr_picture(units):
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


def test_reordering_seen_at_an_idr_picture_restarts_there(units):
    sps_at = next(i for i, u in enumerate(units) if i > TRIAL_PACKETS + 2 and headers(u, "h264").idr)
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


def _without_parameter_sets(unit: bytes) -> bytes:
    """`unit` with its SPS and PPS NAL units taken out (what a camera that sends them only in its SDP sends)."""
    starts = [i for i in range(len(unit) - 3) if unit[i : i + 3] == b"\x00\x00\x01"]
    kept = b""
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(unit)
        if unit[start + 3] & 0x1F not in (7, 8):
            kept += b"\x00" + unit[start:end] if not unit[start:end].startswith(b"\x00") else unit[start:end]
    return kept


def _late_b_frames(count: int, start: int) -> list[int]:
    """Timestamps in decode order: in order up to `start`, then P B pairs (a step back every other packet)."""
    times = [40 * i for i in range(start)]
    for k in range(start, count - 1, 2):
        times += [40 * (k + 1), 40 * k]
    return (times + [40 * (count - 1)])[:count]


def _decodable(units: list[bytes]) -> int:
    """How many pictures FFmpeg's decoder, started afresh at `units[0]`, gives for them (a packet it refuses gives
    none)."""
    decoder, pictures = av.CodecContext.create("h264", "r"), 0
    for unit in [*units, None]:
        try:
            pictures += len(decoder.decode(av.Packet(unit) if unit is not None else None))
        except av.error.InvalidDataError:
            continue
    return pictures


def test_a_clock_leap_back_within_the_trial_is_not_taken_for_reordering(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    times = [40 * i for i in range(10)] + [40 * i - 10_000 for i in range(10)]  # 250 frames back, at the tenth packet
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [] and decoder.watch.declaring
    assert decoder.shown == times  # every picture after the leap handed on: the source's clock takes the leap


def test_late_b_frames_restart_at_the_next_idr_not_at_parameter_sets_repeated_before_a_p_frame(units):
    sets = b"".join(headers(units[0], "h264").parameter_sets)
    stream = [u if headers(u, "h264").idr else sets + u for u in units[:130]]  # a camera that repeats them always
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for unit, at in zip(stream, _late_b_frames(len(stream), TRIAL_PACKETS + 5)):
        decoder.read(unit, at)
    assert decoder.restarts == [(60, "drain")]  # the next IDR picture, not the next packet carrying an SPS
    assert decoder.fed[60][0] == units[60] and _decodable([data for data, _ in decoder.fed[60:]]) == 70


def test_a_camera_that_sends_its_parameter_sets_only_in_its_sdp_restarts_at_the_next_idr_with_them(units):
    sdp = b"".join(headers(units[0], "h264").parameter_sets)
    stream = [_without_parameter_sets(u) for u in units[:130]]
    stream[0] = sdp + stream[0]  # as NvdecDecoder puts the SDP's before the first packet
    assert all(headers(u, "h264").sps is None for u in stream[1:]) and headers(stream[60], "h264").idr
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for unit, at in zip(stream, _late_b_frames(len(stream), TRIAL_PACKETS + 5)):
        decoder.read(unit, at)
    assert decoder.restarts == [(60, "drain")]
    restarted = [data for data, _ in decoder.fed[60:]]
    assert restarted[0] == sdp + stream[60] and _decodable(restarted) == 70
    assert _decodable(stream[60:]) == 0  # without them a fresh decoder has nothing to start from


def test_a_restart_due_when_a_pass_ends_comes_at_the_next_pass_first_idr(units):
    watch = ReorderWatch("cam", eligible=True)
    decoder = Decoder(watch)
    clip = units[:50]
    for unit, at in zip(clip, _late_b_frames(len(clip), TRIAL_PACKETS + 5)):
        decoder.read(unit, at)
    watch.end()  # the pass ends before its next IDR picture
    for index, unit in enumerate(clip):
        decoder.read(unit, 40 * index)
    assert decoder.restarts == [(50, "drain")]  # the decoder kept for the next pass saw the declared SPS
    assert not _declared(decoder.fed[50][0]) and not watch.declaring


def test_a_repeated_timestamp_does_not_make_a_clock_leap_in_the_trial_look_like_reordering(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    times = [40 * i for i in range(9)] + [320] + [40 * i - 10_000 for i in range(10)]  # a repeat, then the leap
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [] and decoder.watch.declaring and decoder.shown == times


def test_one_timestamp_stamped_far_ahead_does_not_make_the_next_ones_return_look_like_reordering(units):
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    times = [40 * i for i in range(20)]
    times[8] = 20_000  # one packet stamped 20 s ahead, in the trial
    for unit, at in zip(units, times):
        decoder.read(unit, at)
    assert decoder.restarts == [] and decoder.watch.declaring and decoder.shown == times


def test_a_new_sps_while_a_restart_is_due_restarts_the_decoder_once(units, shared):
    demuxer = Demuxer(str(shared("media/dog-phone-1080p.mp4")), "phone")  # another size, another SPS
    demuxer.open()
    phone = [bytes(p) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True) if p.size][:5]
    demuxer.close()
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    stream = units[:50] + phone  # late B-frames, then the camera changes its resolution before its next IDR
    for unit, at in zip(stream, _late_b_frames(50, TRIAL_PACKETS + 5) + [40 * (50 + i) for i in range(5)]):
        decoder.read(unit, at)
    assert decoder.restarts == []  # NvdecDecoder starts a fresh decoder for the new SPS by itself; no second one
    assert [data for data, _ in decoder.fed[50:]] == phone and not decoder.watch.declaring


def test_the_decoder_keeps_the_declared_sps_until_the_restart_and_a_lone_pps_does_not_drop_the_sps(units):
    sps, pps = headers(units[0], "h264").parameter_sets
    stream = [_without_parameter_sets(u) for u in units[:130]]
    stream[0] = sps + pps + stream[0]
    stream[45] = sps + pps + stream[45]  # the camera repeats them before a P-frame while the restart is due
    stream[50] = pps + stream[50]  # and later its PPS alone
    decoder = Decoder(ReorderWatch("cam", eligible=True))
    for unit, at in zip(stream, _late_b_frames(len(stream), TRIAL_PACKETS + 5)):
        decoder.read(unit, at)
    assert decoder.restarts == [(60, "drain")]
    assert _declared(decoder.fed[45][0])  # the decoder started on the declared SPS keeps it until it is replaced
    restarted = [data for data, _ in decoder.fed[60:]]
    assert restarted[0] == sps + pps + stream[60] and _decodable(restarted) == 70
