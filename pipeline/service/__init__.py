"""A pipeline run as a service: the runner plus one HTTP server for the API, metrics and status.

    runner = PipelineRunner(config)
    service = Service(runner, HttpConfig(port=9108), Control(runner, "site.yaml"))
    service.run()                      # until stopped (request_stop, SIGINT, SIGTERM)
"""
from __future__ import annotations

from typing import Callable

from pipeline.config.models import HttpConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.runtime.runs import package_version
from pipeline.runtime.snapshot import Snapshot
from pipeline.service.control import Control

__all__ = ["Control", "Service"]


class Service:
    """runner: the pipeline. http: where its server listens (bound at once: a port in use is a ConfigError
    here, before any stream starts). control: how changes apply (default: to the running pipeline only,
    with no config file to write back to or reload). cluster: in a fleet, this instance's coordinator
    (`pipeline.cluster`), for /api/cluster and the cluster's metrics."""

    def __init__(self, runner: PipelineRunner, http: HttpConfig, control: Control | None = None, cluster=None):
        from pipeline.service.app import make_app  # noqa: PLC0415 - FastAPI loads only for a service
        from pipeline.service.gpu import GpuCollector  # noqa: PLC0415
        from pipeline.service.server import HttpServer  # noqa: PLC0415

        self.runner = runner
        self.control = control or Control(runner)
        self._gpu = GpuCollector()
        app = make_app(self.control, http.token, package_version(), [self._gpu], http.console, cluster, http.host)
        self.console = app.state.console
        self._resources = [*app.state.resources, self._gpu]
        try:
            self.server = HttpServer(app, http.host, http.port)
        except BaseException:
            if self.console is not None:
                self.console.close()
            self._close_resources()
            raise

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, duration_s: float | None = None, on_progress: Callable[[Snapshot], None] | None = None,
            progress_interval_s: float = 1.0) -> Snapshot:
        """Serve while the pipeline runs: until stopped, or for `duration_s` (then the run ends as a run of
        files would); the server answers from before the engine is warm until the pipeline has stopped.
        ConfigError, with the console and resources closed, when the server cannot start (another process listens
        on the port since it was bound)."""
        try:
            self.server.start()
            return self.runner.run(duration_s, on_progress, progress_interval_s, until_stopped=duration_s is None)
        finally:
            if self.console is not None:
                self.console.close()
            self.server.stop()
            self._close_resources()

    def request_stop(self) -> None:
        self.runner.request_stop()

    def _close_resources(self) -> None:
        for resource in self._resources:
            resource.close()

