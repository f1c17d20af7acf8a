"""Telemetry: per-lane histograms of how long frames take and how batches look (`prometheus_client`).

    capture ──frame age──▶ batch taken ──detector──▶ detections handed to the stages
    └──────────────────────────── capture to detection ────────────────────────────┘

Observed on the inference threads once per batch (a frame's times once per frame of the batch, well under a
microsecond each), never on the per-frame paths of the sources or the stages. A `Telemetry` is a
`prometheus_client` collector of its own pipeline's histograms: the service registers it in its registry.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

from prometheus_client import Histogram
from prometheus_client.core import Metric

from pipeline.types import FrameBatch

PREFIX = "streamweave"
_NS_PER_S = 1e9

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
ENGINE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)


class Telemetry:
    """The histograms of one pipeline, each labelled by `lane`:

    - `streamweave_capture_to_detection_seconds`: a frame's capture (`Frame.wall_ns`) until its detections
      are handed to the stages, each stream's in order (what a camera's results lag behind the scene);
    - `streamweave_frame_age_at_batch_seconds`: capture until its batch was taken from the aligned buffer
      (decoding and waiting in the ring; the rest of the latency is the detector and the hand-off);
    - `streamweave_engine_batch_seconds`: the detector's time per detected batch;
    - `streamweave_batch_size_frames`: frames per detected batch (their sum is the frames detected).

    clock_ns: the host clock the frames were stamped with (`time.time_ns`).
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns):
        self._clock = clock_ns
        self.latency = _histogram("capture_to_detection_seconds",
                                  "seconds from a frame's capture until its detections are handed to the stages",
                                  LATENCY_BUCKETS_S)
        self.frame_age = _histogram("frame_age_at_batch_seconds",
                                    "seconds from a frame's capture until its batch left the aligned buffer",
                                    LATENCY_BUCKETS_S)
        self.engine = _histogram("engine_batch_seconds", "seconds the detector took per detected batch",
                                 ENGINE_BUCKETS_S)
        self.batch_size = _histogram("batch_size_frames", "frames per detected batch", BATCH_SIZE_BUCKETS)
        self.latest: dict[str, float] = {}  # per stream: its last frame's capture to detection, seconds

    def batch_taken(self, batch: FrameBatch) -> None:
        """A batch left the aligned buffer: each frame's age since capture."""
        _observe_ages(self.frame_age.labels(batch.lane), batch, self._clock())

    def batch_detected(self, batch: FrameBatch, engine_s: float) -> None:
        """A batch's detections are being handed to the stages; `engine_s`: the detector's time for it."""
        self.engine.labels(batch.lane).observe(engine_s)
        self.batch_size.labels(batch.lane).observe(len(batch))
        latency, now_ns = self.latency.labels(batch.lane), self._clock()
        for frame in batch.frames:
            age = max(now_ns - frame.wall_ns, 0) / _NS_PER_S
            latency.observe(age)
            self.latest[frame.stream_id] = age

    def forget(self, stream_id: str) -> None:
        """A stream removed: its last latency goes (the histograms are per lane)."""
        self.latest.pop(stream_id, None)

    def collect(self) -> Iterator[Metric]:
        for histogram in (self.latency, self.frame_age, self.engine, self.batch_size):
            yield from histogram.collect()


def _histogram(name: str, help_: str, buckets: tuple[float, ...]) -> Histogram:
    return Histogram(f"{PREFIX}_{name}", help_, ["lane"], buckets=buckets, registry=None)


def _observe_ages(histogram, batch: FrameBatch, now_ns: int) -> None:
    for frame in batch.frames:
        histogram.observe(max(now_ns - frame.wall_ns, 0) / _NS_PER_S)  # the wall clock may step back
