"""The event id, defined once (`pipeline.types.make_event_id`), and events made from a frame's moment."""
from __future__ import annotations

import hashlib

import numpy as np

from pipeline.types import Detections, Frame, FrameResult, Moment, make_event_id, track_uid

RUN_A, RUN_B = "20250314T091502.123Z-5f3a9c1e", "20250314T091502.123Z-77d0e412"
WALL = 1_741_943_702_123_000_000


def test_the_id_is_a_stable_hash_of_stream_rule_track_uid_and_capture_time():
    event_id = make_event_id("gate-1", "line_cross:gate", track_uid(RUN_A, 7), WALL)
    # pinned to the documented definition: ids already stored must stay valid across versions
    assert event_id == hashlib.sha1(f"gate-1|line_cross:gate|{RUN_A}/7|{WALL}".encode()).hexdigest()[:24]


def test_every_part_of_the_definition_changes_the_id():
    base = ("gate-1", "line_cross:gate", track_uid(RUN_A, 7), WALL)
    variants = [
        ("gate-2", *base[1:]),
        (base[0], "line_cross:exit", *base[2:]),
        (base[0], "alert:gate", *base[2:]),
        (*base[:2], track_uid(RUN_A, 8), base[3]),
        (*base[:2], track_uid(RUN_B, 7), base[3]),
        (*base[:3], WALL + 1),
    ]
    ids = {make_event_id(*base), *(make_event_id(*v) for v in variants)}
    assert len(ids) == 1 + len(variants)


def test_two_runs_with_the_same_content_never_share_an_event_id():
    # A file processed twice: same stream, tracks, rules and stream times; even a frame captured at the
    # same nanosecond on two instances gets two ids, as the run ids differ.
    def events(run_id: str) -> set[str]:
        return {Moment(run_id, "cam-1", i * 40_000_000, WALL + i * 40_000_000).event("door", kind, track, 0, {}).event_id
                for i in range(100) for track in (-1, 1, 2) for kind in ("zone_enter", "zone_exit", "alert")}

    first, second = events(RUN_A), events(RUN_B)
    assert len(first) == len(second) == 100 * 3 * 3
    assert not first & second


def test_an_event_made_at_a_frames_moment_carries_its_run_stream_and_times():
    frame = Frame("cam-1", 12, 480_000_000, WALL, None, 64, 48)
    result = FrameResult(frame, Detections.empty(), run_id=RUN_A)
    event = result.moment.event("door", "zone_exit", 3, 2, {"reason": "lost"}, ts_ns=400_000_000)
    assert (event.run_id, event.stream_id, event.rule, event.kind) == (RUN_A, "cam-1", "door", "zone_exit")
    assert (event.track_id, event.class_id, event.ts_ns, event.wall_ns) == (3, 2, 400_000_000, WALL)
    assert event.event_id == make_event_id("cam-1", "zone_exit:door", track_uid(RUN_A, 3), WALL)
    assert result.moment.event("door", "zone_exit", np.int64(3), np.int32(2), {}).track_id == 3
