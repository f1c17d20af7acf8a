"""A whole pipeline (fake engine, CPU decode) running live streams on a thread, for source tests that watch
what every stream does while others fail: `pipelines` (a fixture; import it in a conftest) starts them."""
from __future__ import annotations

import threading
from collections import defaultdict

import pytest

from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.testing import RecordingSink


class TimedSink(RecordingSink):
    """A RecordingSink that also keeps each frame's `pts_ns`, per stream."""

    def __init__(self):
        super().__init__("timed")
        self.pts: dict[str, list[int]] = defaultdict(list)

    def on_frame(self, result) -> None:
        with self._cond:
            self.pts[result.frame.stream_id].append(result.frame.pts_ns)
        super().on_frame(result)


class Running:
    """A PipelineRunner (fake engine, CPU decode) on a thread; `stop()` ends it and returns the final snapshot."""

    def __init__(self, tmp_path, streams: list[dict]):
        defaults = dict(decode="cpu", ring_size=32, open_timeout_s=3.0, read_timeout_s=2.0,
                        reconnect_min_s=0.1, reconnect_max_s=0.5)
        self.sink = TimedSink()
        self.runner = PipelineRunner(PipelineConfig.model_validate({
            "plugins": ["pipeline.testing"], "streams": [defaults | s for s in streams],
            "detector": {"model": "fake", "engine": "fake"}, "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
        }), sinks=[self.sink])
        self.snap = None
        self.thread = threading.Thread(target=self._run, name="runner")
        self.thread.start()

    def _run(self) -> None:
        self.snap = self.runner.run()

    def count(self, stream_id: str) -> int:
        return len(self.sink.seqs[stream_id])

    def wait_frames(self, stream_id: str, count: int, timeout: float = 15.0) -> bool:
        return self.sink.wait_for(lambda s: len(s.seqs[stream_id]) >= count, timeout)

    def stats(self, stream_id: str) -> dict:
        return self.runner.snapshot().streams[stream_id]

    def stop(self):
        self.runner.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the pipeline did not stop"
        return self.snap


@pytest.fixture
def pipelines(tmp_path):
    """`pipelines([stream, ...])` -> a started `Running`; all are stopped after the test."""
    runs = []

    def run(streams: list[dict]) -> Running:
        runs.append(Running(tmp_path, streams))
        return runs[-1]

    yield run
    for running in runs:
        if running.thread.is_alive():
            running.stop()
