"""Where each frame is in its source: a live `fake://` camera that ends its stream every few frames is
reconnected, and each connection is a new epoch whose frames are numbered from 0 again."""
from __future__ import annotations

import pipeline.testing  # noqa: F401 - fake://
from pipeline.config.models import StreamConfig
from pipeline.sources.worker import StreamWorker
from tests.support.collecting_sink import CollectingSink


def test_a_reconnected_live_stream_carries_its_connection_epoch_and_counts_from_zero_again():
    config = StreamConfig(id="cam", url="fake://cam?fps=100&frames=10", reconnect_min_s=0.01, reconnect_max_s=0.05)
    sink = CollectingSink()
    worker = StreamWorker(config, sink)
    worker.start()
    assert sink.wait_for(25, timeout=10), worker.stats()
    worker.stop()
    assert worker.join(5)
    frames = sink.frames
    assert [(f.epoch, f.index) for f in frames[:25]] == [(i // 10, i % 10) for i in range(25)]
    assert [f.seq for f in frames] == list(range(len(frames)))  # seq goes on across connections
    assert all(b.pts_ns > a.pts_ns for a, b in zip(frames, frames[1:]))
    assert worker.stats()["reconnects"] >= 2
