"""Timestamps, fps caps, reconnect delays and URL masking: pure functions of their inputs."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from pipeline.sources.clock import Arrivals, FrameClock
from pipeline.masking import mask_url
from pipeline.sources.reader import DecodedFrame
from pipeline.fps_cap import FpsCap
from pipeline.sources.timeline import Timeline
from pipeline.types import PTS_UNKNOWN, pts_to_ns


def frame(pts_ns: int) -> DecodedFrame:
    return DecodedFrame(np.zeros((2, 2, 3), np.uint8), pts_ns, 2, 2)


def stamped(clock: FrameClock, pts: list[int]) -> list[int]:
    """The pass's timestamps, as its frames come out of `clock` (those it holds for a leap, at the end)."""
    out = [f.pts_ns for p in pts for f in clock.stamp(frame(p))]
    return out + [f.pts_ns for f in clock.flush()]


def test_pts_to_ns_is_exact_integer_arithmetic_for_large_timestamps():
    # 10 hours at 90 kHz: a float product would be off by tens of nanoseconds
    pts = 90_000 * 36_000 + 1
    assert pts_to_ns(pts, Fraction(1, 90_000)) == 36_000 * 10**9 + 11_111
    assert pts_to_ns(1, Fraction(1, 3)) == 333_333_333
    assert pts_to_ns(2, Fraction(1, 3)) == 666_666_667
    assert pts_to_ns(None, Fraction(1, 25)) == PTS_UNKNOWN


def test_index_clock_times_frames_by_rate_ignoring_decoder_pts():
    clock = FrameClock(Fraction(30000, 1001), timing="index")
    out = stamped(clock, (5, 1, PTS_UNKNOWN, 3))
    assert out == [0, 33_366_667, 66_733_333, 100_100_000]


def test_frame_clock_repairs_missing_and_backward_pts_and_counts_them():
    clock = FrameClock(Fraction(25), timing="pts")
    out = stamped(clock, (PTS_UNKNOWN, 40_000_000, PTS_UNKNOWN, 40_000_000, 200_000_000))
    assert out == [0, 40_000_000, 80_000_000, 80_000_001, 200_000_000]
    assert clock.repaired == 2


def test_a_pts_that_jumps_back_is_joined_one_frame_after_the_last_and_the_clock_goes_on_from_there():
    """An encoder restart or an HLS discontinuity: every later frame was nudged 1 ns past the one before (days of
    frames 1 ns apart for a camera up for days), and an fps cap dropped them all."""
    clock = FrameClock(Fraction(25), timing="pts")
    day = 86_400 * 10**9
    out = stamped(clock, (day, day + 40_000_000, 0, 40_000_000, 80_000_000, 60_000_000))
    assert out == [day, day + 40_000_000, day + 80_000_000, day + 120_000_000, day + 160_000_000, day + 160_000_001]
    assert clock.repaired == 2  # the discontinuity, and a frame 20 ms back (less than a period: nudged)


def test_a_single_bad_pts_or_an_inserted_break_is_joined_both_ways_without_a_leap():
    clock = FrameClock(Fraction(25), timing="pts")
    hour = 3600 * 10**9
    raw = [hour, hour + 40_000_000, 7_000_000, hour + 120_000_000, hour + 160_000_000]  # one frame of pts 7 ms
    out = stamped(clock, raw)
    assert out == [hour + i * 40_000_000 for i in range(5)] and clock.repaired == 2


def test_a_single_pts_far_ahead_is_held_and_put_back_between_its_neighbours():
    """An RTP timestamp glitch: one frame an hour ahead moved every later frame an hour on (and a paced file waited
    the hour), as the return to the old line was taken for a discontinuity after it."""
    clock = FrameClock(Fraction(25), timing="pts")
    period, hour = 40_000_000, 3600 * 10**9
    assert stamped(clock, [0, period]) == [0, period]
    assert clock.stamp(frame(2 * period + hour)) == []  # held until the next frame says which line goes on
    assert stamped(clock, [3 * period, 4 * period]) == [2 * period, 3 * period, 4 * period]
    assert clock.repaired == 1


def test_a_leap_the_next_frame_goes_on_from_is_kept_and_so_is_one_that_ends_the_pass():
    clock = FrameClock(Fraction(25), timing="pts")
    period, hour = 40_000_000, 3600 * 10**9
    raw = [0, period, hour, hour + period, 2 * hour]
    assert stamped(clock, raw) == raw and clock.repaired == 0


def test_a_stall_after_a_discontinuity_keeps_its_gap():
    clock = FrameClock(Fraction(25), timing="pts")
    raw = [100 * 10**9, 100 * 10**9 + 40_000_000, 0, 40_000_000, 5_040_000_000, 5_080_000_000]  # restart, then 5 s
    out = stamped(clock, raw)
    assert [b - a for a, b in zip(out, out[1:])] == [40_000_000, 40_000_000, 40_000_000, 5_000_000_000, 40_000_000]


def test_a_stall_long_after_a_restart_keeps_its_gap_once_the_pts_pass_where_the_old_line_was_left():
    """The camera restarted (pts back to 0) at 100 s and stalled 4 s, 150 s later: its pts were then past where the
    old line was left, and the stall was taken for the old line coming back and shrunk to one period."""
    clock = FrameClock(Fraction(25), timing="pts")
    period = 40_000_000
    raw = [i * period for i in range(2500)] + [i * period for i in range(3750)]  # 100 s, a restart, 150 s
    raw += [raw[-1] + 4 * 10**9 + i * period for i in range(3)]
    out = stamped(clock, raw)
    assert [b - a for a, b in zip(out[-5:], out[-4:])] == [period, 4 * 10**9, period, period]


def test_arrival_clock_times_untimed_live_frames_by_when_they_arrive_from_the_first():
    # MJPEG over HTTP: FFmpeg numbers the frames at a guessed 25 fps; this camera sends ~10 fps, unevenly
    arrivals = iter([5_000_000_000, 5_100_000_000, 5_230_000_000, 5_230_000_000, 5_300_000_000])
    clock = FrameClock(Fraction(25), timing="arrival", now=arrivals.__next__)
    out = stamped(clock, (0, 1, 2, 3, 4))
    assert out == [0, 100_000_000, 230_000_000, 230_000_001, 300_000_000]
    assert clock.repaired == 1


@pytest.mark.parametrize("source_fps,cap", [(25, 10), (30, 15), (30, 7.5), (12.5, 5)])
def test_fps_cap_keeps_the_capped_rate_of_a_faster_source(source_fps, cap):
    rate = Fraction(source_fps)
    pts = [(i * 10**9 * rate.denominator + rate.numerator // 2) // rate.numerator for i in range(int(source_fps * 60))]
    fps_cap = FpsCap(cap)
    kept = [p for p in pts if fps_cap.keep(p)]
    assert len(kept) == pytest.approx(cap * 60, abs=1)
    gaps, interval, period = np.diff(kept), 10**9 / cap, 10**9 / source_fps
    assert gaps.min() >= interval - period and gaps.max() <= interval + period  # even, not bursty


def test_fps_cap_passes_a_slower_source_through_and_no_cap_keeps_everything():
    pts = [i * 200_000_000 for i in range(50)]  # 5 fps
    assert all(FpsCap(10).keep(p) for p in pts)
    assert all(FpsCap(None).keep(p) for p in range(0, 10**9, 10**6))


def test_timeline_continues_a_looped_file_one_frame_period_after_its_end():
    line = Timeline()
    first = [line.map(p) for p in (0, 40, 80, 120)]
    line.start_pass()
    second = [line.map(p) for p in (0, 40, 80)]
    assert first == [0, 40, 80, 120]
    assert second == [160, 200, 240]


def test_timeline_shifts_a_reconnected_stream_by_the_outage_and_never_goes_back():
    line = Timeline()
    [line.map(p) for p in (1000, 1040, 1080)]
    line.start_pass(gap_ns=5000)
    assert [line.map(p) for p in (0, 40)] == [6080, 6120]
    assert line.map(10) == 6121  # a backwards pts inside a pass is nudged forward


@pytest.mark.parametrize("url,masked", [
    ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://user@cam.local/stream?x=1", "rtsp://***@cam.local/stream?x=1"),
    ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
    ("/videos/a@b.mp4", "/videos/a@b.mp4"),
])
def test_mask_url_hides_credentials_and_nothing_else(url, masked):
    assert mask_url(url) == masked


def test_timeline_numbers_frames_within_their_pass_and_counts_the_passes_that_gave_frames():
    line = Timeline()
    places = []
    for pts in (0, 40, 80):
        line.map(pts)
        places.append((line.epoch, line.index))
    line.start_pass(gap_ns=10**9)  # a reconnect attempt that gave no frame ...
    line.start_pass(gap_ns=2 * 10**9)  # ... and one that did
    for pts in (7000, 7040):
        line.map(pts)
        places.append((line.epoch, line.index))
    assert places == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_a_camera_whose_rate_falls_is_held_for_one_frame_only_not_for_every_frame_after():
    """Night mode: 25 frames/s, then one a second. Each one-second step is a leap against the 40-ms steps before;
    once the first is kept, the next ones step as far as it did and come out at once."""
    clock = FrameClock(Fraction(25), timing="pts")
    period, second = 40_000_000, 10**9
    assert stamped(clock, [0, period])[-1] == period
    slow = [period + i * second for i in range(1, 6)]
    came_out = [[f.pts_ns for f in clock.stamp(frame(p))] for p in slow]
    assert came_out == [[], [slow[0], slow[1]], [slow[2]], [slow[3]], [slow[4]]]
    assert clock.repaired == 0


def test_one_bad_pts_right_after_a_stall_is_still_held_and_put_back():
    clock = FrameClock(Fraction(25), timing="pts")
    period, stall = 40_000_000, 2 * 10**9
    raw = [0, period, 2 * period, 3 * period + stall, 3 * period + stall + 6 * 10**9, 4 * period + stall,
           5 * period + stall]
    out = stamped(clock, raw)
    assert [b - a for a, b in zip(out, out[1:])] == [period, period, period + stall, period // 2, period // 2, period]
    assert clock.repaired == 1


def test_a_frame_is_timed_from_its_own_packets_arrival_in_display_order():
    clock = iter([10, 20, 30, 40, 50])
    arrivals = Arrivals(now=lambda: next(clock))
    for pts in (0, 3, 1, 2):  # I0 P3 B1 B2: decode order, as they are read
        arrivals.read(pts)
    assert [arrivals.of(pts) for pts in (0, 1, 2, 3)] == [10, 30, 40, 20]
    arrivals.read(None)  # a packet without a pts: its frame is timed by the last packet read
    assert arrivals.of(4) == 50


def test_arrivals_keep_a_bounded_number_of_packets_and_forget_those_before_a_frame_shown():
    arrivals = Arrivals(now=iter(range(1000)).__next__)
    for pts in range(Arrivals.KEPT + 50):  # read at "times" 0, 1, 2, ...: packet pts p at time p
        arrivals.read(pts)
    last = Arrivals.KEPT + 49
    assert arrivals.of(10) == last  # beyond KEPT: timed by the last packet read
    assert arrivals.of(60) == 60
    assert arrivals.of(55) == last  # before a frame already shown
