"""Telemetry: each frame of a batch observed once per point, at its age since capture, labelled by lane."""
from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pipeline.runtime.telemetry import Telemetry
from pipeline.types import Frame, FrameBatch

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def batch(lane: str, captured_ms_before: list[int]) -> FrameBatch:
    frames = [Frame("cam", seq, seq * 40 * MS, T0 - ms * MS, np.zeros((4, 4, 3), np.uint8), 4, 4)
              for seq, ms in enumerate(captured_ms_before)]
    return FrameBatch(frames, lane)


def registry_of(telemetry: Telemetry) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(telemetry)
    return registry


def test_a_batch_is_observed_per_frame_when_taken_and_when_detected_and_per_batch_for_the_detector():
    now = [T0]
    telemetry = Telemetry(clock_ns=lambda: now[0])
    taken = batch("fast", [3, 40, 400])
    telemetry.batch_taken(taken)
    now[0] = T0 + 20 * MS  # the detector took 20 ms
    telemetry.batch_detected(taken, engine_s=0.02)
    metrics = registry_of(telemetry)

    def sample(name: str, **labels) -> float:
        return metrics.get_sample_value(f"streamweave_{name}", {"lane": "fast", **labels})

    assert [sample("frame_age_at_batch_seconds_bucket", le=le) for le in ("0.005", "0.05", "0.5")] == [1, 2, 3]
    assert sample("frame_age_at_batch_seconds_sum") == pytest.approx((3 + 40 + 400) / 1000)
    assert [sample("capture_to_detection_seconds_bucket", le=le) for le in ("0.025", "0.075", "0.5")] == [1, 2, 3]
    assert sample("capture_to_detection_seconds_sum") == pytest.approx((23 + 60 + 420) / 1000)
    assert sample("capture_to_detection_seconds_count") == 3
    assert sample("batch_size_frames_sum") == 3 and sample("batch_size_frames_count") == 1
    assert sample("engine_batch_seconds_sum") == 0.02 and sample("engine_batch_seconds_count") == 1
    assert metrics.get_sample_value("streamweave_batch_size_frames_count", {"lane": "default"}) is None


def test_lanes_are_counted_apart_and_a_clock_stepped_back_counts_as_no_age():
    telemetry = Telemetry(clock_ns=lambda: T0)
    telemetry.batch_taken(batch("fast", [10]))
    telemetry.batch_taken(batch("default", [-5000, 30]))  # stamped "after" now: the wall clock stepped back
    metrics = registry_of(telemetry)
    assert metrics.get_sample_value("streamweave_frame_age_at_batch_seconds_count", {"lane": "fast"}) == 1
    assert metrics.get_sample_value("streamweave_frame_age_at_batch_seconds_count", {"lane": "default"}) == 2
    assert metrics.get_sample_value("streamweave_frame_age_at_batch_seconds_sum", {"lane": "default"}) == pytest.approx(0.03)
