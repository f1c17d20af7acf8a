"""A pipeline served over HTTP on a thread, for tests of the control API (fake cameras and engine)."""
from __future__ import annotations

import threading
from pathlib import Path

import httpx

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.config.models import HttpConfig, PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Control, Service

TOKEN = "a-token-of-sixteen-chars"
DROPS = ("dropped_overflow", "dropped_age", "dropped_fps_cap", "dropped_sink", "dropped_sinks")


def config_data(tmp_path, streams: list[dict], **sections) -> dict:
    return {"plugins": ["pipeline.testing"], "streams": streams, "detector": {"model": "fake", "engine": "fake"},
            "runtime": {"outbox_path": str(tmp_path / "outbox.db")}, **sections}


def config(tmp_path, streams: list[dict], **sections) -> PipelineConfig:
    return PipelineConfig.model_validate(config_data(tmp_path, streams, **sections))


class Served:
    """A Service on a free loopback port, running on a thread; `client` talks to it. path: the config
    file it was loaded from (changes are written back to it, reload reads it)."""

    def __init__(self, cfg: PipelineConfig, token: str | None = None, sinks=(), path: Path | None = None):
        self.runner = PipelineRunner(cfg, sinks=list(sinks))
        self.service = Service(self.runner, HttpConfig(port=0, token=token), Control(self.runner, path))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.service.port}", headers=headers, timeout=30)
        self.snap = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.runner.running.wait(20)

    def _run(self):
        self.snap = self.service.run()

    def stop(self):
        self.service.request_stop()
        self.thread.join(30)
        self.client.close()
        return self.snap
