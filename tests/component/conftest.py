"""The component tier: the pipeline as a whole, built from the fakes the package ships (`pipeline.testing`):
fake cameras and files, the fake engine, recording and hanging sinks. No model, media or server needed."""
from __future__ import annotations

import threading

import pytest

import pipeline.testing  # noqa: F401 - registers fake:// and the fake engine
from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner


def fake_config(tmp_path, streams: list[dict], **extra) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": streams,
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
        **extra,
    })


class Running:
    """A PipelineRunner running on a thread until `stop()`; `snap` is its final Snapshot."""

    def __init__(self, runner: PipelineRunner):
        self.runner = runner
        self.snap = None
        self._thread = threading.Thread(target=self._run, name="test-runner")
        self._thread.start()

    def _run(self) -> None:
        self.snap = self.runner.run()

    def stop(self, timeout: float = 30.0):
        self.runner.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipeline did not stop"
        return self.snap


@pytest.fixture
def running():
    started: list[Running] = []

    def start(runner: PipelineRunner) -> Running:
        started.append(Running(runner))
        return started[-1]

    yield start
    for run in started:
        if run.snap is None:
            run.stop()
