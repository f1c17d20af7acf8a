"""The HTTP API of a running pipeline (FastAPI; OpenAPI docs on /docs).

    GET  /healthz            alive                       GET  /readyz   engine warm, a camera delivers
    GET  /metrics            Prometheus text             GET  /status   the live Snapshot as JSON
    GET  /api/streams        every stream                GET  /api/streams/{id}
    POST /api/streams        add one (body: its config keys)    DELETE /api/streams/{id}
    PATCH /api/streams/{id}  change url, lane or fps (that camera alone restarts)
    POST /api/streams/{id}/pause, /resume
    GET  /api/config         the effective config, secrets masked
    GET  /api/cluster        in a fleet: instances, leases, handoffs (`pipeline.cluster.api`); there the
                             stream changes go to the fleet's database, and answer 202 for a camera that
                             does not run on this instance
    zones, lines, alert rules, reload and stored events: `pipeline.service.config_api`

    GET  /                   the web console (`pipeline.service.console`); POST /login, /logout its session

With `runtime.http.token` set, /api and /status need `Authorization: Bearer <token>` or the console's
session cookie (`pipeline.service.auth`); without one, every request must name a loopback host and a change
must not come from another site's page (403 otherwise). A bad body gets a
422 naming the key path; a change that cannot apply gets a 4xx saying why, and nothing changes. Changes
go through `Control`: validated, applied, then written back to the config file (in a fleet, the cameras,
zones, lines and alert rules to the fleet's database).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config.models import ConsoleConfig, StreamConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import auth, config_api
from pipeline.service.auth import Sessions
from pipeline.service.console import Console, mount
from pipeline.service.config_api import apply
from pipeline.service.control import Control, entry_of
from pipeline.service.prom import SnapshotCollector
from pipeline.masking import mask_secrets, mask_url
from pipeline.sinks.outputs.webhook import redact_url

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest request body read (413 beyond): bodies are read before the token is checked."""
STREAM_COUNTERS = ("decoded", "frames", "batched", "staged", "dropped_overflow", "dropped_age", "dropped_fps_cap",
                   "dropped_sink", "dropped_sinks", "dropped_copy", "skipped_late", "paced_late", "reconnects",
                   "corrupt_packets", "replayed")


class StreamChange(BaseModel):
    """What PATCH may change on a running camera."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    lane: str | None = None
    fps: float | None = Field(None, gt=0)


class StreamView(BaseModel):
    """One stream as the API shows it (the URL's credentials masked)."""

    id: str
    url: str
    lane: str
    live: bool
    state: str
    fps: float
    latency_s: float | None = Field(description="its last frame's capture to detections, seconds; None while it "
                                    "delivers no frames (not the latency from before)")
    last_error: str | None
    counters: dict[str, int]


def make_app(control: Control, token: str | None = None, version: str = "",
             collectors: Sequence[Collector] = (), console: ConsoleConfig | None = None, cluster=None,
             host: str = "127.0.0.1") -> FastAPI:
    """The app of one pipeline (`control.runner`); /metrics has the runner's counters and histograms, this
    process's CPU and memory, and `collectors` (the GPUs'). cluster: a fleet's `Coordinator` (None: no fleet).
    console: serve the web console at / (None or not enabled: no console); its `Console` is `app.state.console`
    (to close before the server stops); `app.state.resources` are to close once it has stopped (the fleet's
    reader). host: the address it listens on (without a token, requests must name it or another loopback host:
    `auth.LocalOnly`)."""
    runner = control.runner
    app = FastAPI(title="streamweave", version=version, max_body_size=MAX_BODY_BYTES,
                  description="Control and observe a running streamweave pipeline.")
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(runner.snapshot, version))
    registry.register(runner.parts.telemetry)
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    sessions = Sessions(token)
    authorized = [Depends(sessions.check)] if token else []
    if not token:
        app.add_middleware(auth.LocalOnly, host=host)
    app.state.console = None
    app.state.resources = []
    if console is not None and console.enabled:
        app.state.console = Console(control, console)
        registry.register(app.state.console)
        mount(app, app.state.console, authorized)
    app.include_router(auth.router(sessions))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """The process answers."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """200 once the engine is warm and a stream delivers frames (or none is configured, or every one is paused:
        an operator's choice, not a fault), else 503; 503 as well while the detector fails (`detector_failing`: a
        batch failed in the last 10 s, none went through since)."""
        states = [stats.get("state") for stats in runner.snapshot().streams.values()]
        failing = runner.detector_failing()
        active = {config.id for config in runner.streams()} - runner.table.paused()
        ready = runner.running.is_set() and (not active or "running" in states) and not failing
        return JSONResponse({"ready": ready, "detector_failing": failing}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["observe"])
    def metrics() -> Response:
        """Prometheus text exposition of the live counters."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status", tags=["observe"], dependencies=authorized)
    def status() -> Response:
        """The live Snapshot: streams, lanes, sinks, outbox, as the summary table shows them."""
        return Response(json.dumps(dataclasses.asdict(runner.snapshot()), default=str), media_type="application/json")

    @app.get("/api/streams", tags=["streams"], dependencies=authorized)
    def list_streams() -> list[StreamView]:
        snap, paused = runner.snapshot(), runner.table.paused()
        return [_view(config, snap.streams.get(config.id, {}), config.id in paused, runner.parts.telemetry.latest)
                for config in runner.streams()]

    @app.get("/api/streams/{stream_id}", tags=["streams"], dependencies=authorized)
    def get_stream(stream_id: str) -> StreamView:
        return _current(runner, stream_id)

    @app.post("/api/streams", tags=["streams"], status_code=201, dependencies=authorized)
    def add_stream(config: StreamConfig) -> StreamView:
        """Start a camera (and add it to the config file); the others are not paused or reset."""
        apply(control.add_stream, entry_of(config))
        return _current_or_fleet(runner, control, config.id)

    @app.patch("/api/streams/{stream_id}", tags=["streams"], dependencies=authorized)
    def change_stream(stream_id: str, changes: StreamChange) -> StreamView:
        """Change a camera's url, lane or fps cap (null: no cap): it alone restarts (new seq, new tracks)."""
        apply(control.change_stream, stream_id, changes.model_dump(exclude_unset=True))
        return _current_or_fleet(runner, control, stream_id)

    @app.post("/api/streams/{stream_id}/pause", tags=["streams"], dependencies=authorized)
    def pause_stream(stream_id: str) -> StreamView:
        """Stop a camera but keep it listed until it is resumed; 202 while its last frames still go through."""
        if apply(control.pause_stream, stream_id):
            return _current(runner, stream_id)
        return JSONResponse({"id": stream_id, "state": "pausing: it stops once its last frames have gone "
                             "through"}, status_code=202)

    @app.post("/api/streams/{stream_id}/resume", tags=["streams"], dependencies=authorized)
    def resume_stream(stream_id: str) -> StreamView:
        """Start a paused camera again (new seq, new tracks); a camera that runs goes on unchanged."""
        apply(control.resume_stream, stream_id)
        return _current(runner, stream_id)

    @app.delete("/api/streams/{stream_id}", tags=["streams"], status_code=204, dependencies=authorized)
    def remove_stream(stream_id: str) -> Response:
        """Stop a stream, forget it once its last frame went through, and take it out of the config file."""
        apply(control.remove_stream, stream_id)
        return Response(status_code=204)

    @app.get("/api/config", tags=["config"], dependencies=authorized)
    def effective_config() -> dict:
        """The config the pipeline runs, with the streams it has now; credentials and tokens masked."""
        return masked_config(runner)

    app.include_router(config_api.router(control), dependencies=authorized)
    if cluster is not None:
        from pipeline.cluster import api as cluster_api  # noqa: PLC0415 - only in a fleet
        from pipeline.cluster.store import FleetStore  # noqa: PLC0415

        reader = FleetStore(cluster.config.dsn)
        app.state.resources.append(reader)
        registry.register(cluster_api.ClusterCollector(cluster))
        app.include_router(cluster_api.router(cluster, reader), dependencies=authorized)
    return app


def _current_or_fleet(runner: PipelineRunner, control: Control, stream_id: str) -> StreamView | JSONResponse:
    """The stream as it runs here; in a fleet, where it may run on another instance, 202 when it does not."""
    if control.fleet is not None and all(config.id != stream_id for config in runner.streams()):
        return JSONResponse({"id": stream_id, "state": "stored in the fleet; the instance it is assigned to "
                             "starts it at its next heartbeat"}, status_code=202)
    return _current(runner, stream_id)


def _current(runner: PipelineRunner, stream_id: str) -> StreamView:
    for config in runner.streams():
        if config.id == stream_id:
            paused = stream_id in runner.table.paused()
            return _view(config, {} if paused else runner.snapshot().streams.get(stream_id, {}), paused,
                         runner.parts.telemetry.latest)
    raise HTTPException(404, f"no stream '{stream_id}'")


def _view(config: StreamConfig, stats: dict, paused: bool, latency: dict[str, float]) -> StreamView:
    state = "paused" if paused else stats.get("state", "new")
    return StreamView(id=config.id, url=mask_url(config.url), lane=config.lane, live=config.is_live,
                      state=state, fps=stats.get("decode_fps", 0.0),
                      latency_s=latency.get(config.id) if state == "running" else None,
                      last_error=stats.get("last_error"),
                      counters={key: int(stats.get(key, 0) or 0) for key in STREAM_COUNTERS})


async def _invalid_request(request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each key and what is wrong, without the values sent (FastAPI's own answer repeats them: a
    camera's URL with its password)."""
    errors = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": mask_url(str(e.get("msg", "")))}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def masked_config(runner: PipelineRunner) -> dict:
    """The running config with the streams running now, its credentials masked wherever they are (`mask_secrets`:
    URLs, DSNs, and the values of secret-looking keys, a plugin's options included)."""
    data = runner.config.model_dump(mode="json")
    data["streams"] = [config.model_dump(mode="json") for config in runner.streams()]
    data = mask_secrets(data)
    for sink in data["sinks"]:
        if sink.get("type") == "webhook":  # hook URLs often carry their secret in the path, or its query
            sink["url"] = redact_url(sink["url"])
    return data
