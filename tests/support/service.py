"""A pipeline served over HTTP on a thread, for tests of the control API (fake cameras and engine)."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.config.models import HttpConfig, PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Control, Service
from tests.conftest import REPO

TOKEN = "a-token-of-sixteen-chars"
DROPS = ("dropped_overflow", "dropped_age", "dropped_fps_cap", "dropped_sink", "dropped_sinks")


def config_data(tmp_path, streams: list[dict], **sections) -> dict:
    return {"plugins": ["pipeline.testing"], "streams": streams, "detector": {"model": "fake", "engine": "fake"},
            "runtime": {"outbox_path": str(tmp_path / "outbox.db")}, **sections}


def config(tmp_path, streams: list[dict], **sections) -> PipelineConfig:
    return PipelineConfig.model_validate(config_data(tmp_path, streams, **sections))


class Served:
    """A Service on a free loopback port, running on a thread; `client` talks to it. path: the config
    file it was loaded from (changes are written back to it, reload reads it); applied: the text it was read from.
    cluster: a fleet's coordinator (`pipeline.cluster`) for /api/cluster. port: where it listens (0: a free port;
    another's after it stopped: the same server restarted)."""

    def __init__(self, cfg: PipelineConfig, token: str | None = None, sinks=(), path: Path | None = None,
                 applied: str | None = None, cluster=None, port: int = 0):
        self.runner = PipelineRunner(cfg, sinks=list(sinks))
        control = Control(self.runner, path, applied=applied)
        self.service = Service(self.runner, HttpConfig(port=port, token=token), control, cluster=cluster)
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


class ServiceProcess:
    """A service in a child process (`command`, e.g. `run_pipeline.py run CONFIG`) answering on `port`;
    leaving the `with` block (or `stop`) sends it `signum` and collects its exit code and output."""

    def __init__(self, command: list[str], port: int, *, cwd: Path = REPO, env: dict | None = None):
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.port = port
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        self.returncode: int | None = None
        self.out = self.err = ""

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.returncode is None:
            self.stop()

    def status(self, path: str) -> int | None:
        """The HTTP status of GET `path`; None while nothing answers."""
        try:
            return self.client.get(path).status_code
        except httpx.TransportError:
            return None

    def poll(self, condition, timeout: float = 30.0) -> bool:
        """Look again until `condition()`; False when the deadline passes or the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if condition():
                return True
            time.sleep(0.1)  # another process over HTTP: there is nothing to be notified by
        return False

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(signum)
        self.out, self.err = self.proc.communicate(timeout=timeout)
        self.client.close()
        self.returncode = self.proc.returncode
        return self.returncode
