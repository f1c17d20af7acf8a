"""Pydantic models mirroring the YAML file. Keys equal constructor arguments of the stages.

Validators here are pure: probing hardware (is there a GPU? which engine?) happens in `resolve.py`.
"""
from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline import plugins
from pipeline.config.outputs import OutputEntry, Strict

log = logging.getLogger(__name__)


class LaneConfig(Strict):
    name: str = Field(description="lane name that streams refer to")
    priority: int = Field(0, description="higher is served first when several lanes have work")
    max_batch: int = Field(8, ge=1, le=1024, description="frames per batch; larger batches use the engine better")
    max_wait_ms: float = Field(
        30, ge=0, description="flush a partial batch once its oldest frame waited this long; larger fills batches better but adds latency"
    )
    max_age_ms: float = Field(
        2000, gt=0, description="live frames older than this are dropped (and counted) instead of detected"
    )


class StreamConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="unique stream name used in storage and events")
    url: str = Field(description="file path, rtsp://..., http(s):// (HLS .m3u8, MJPEG, MPEG-TS), or a scheme a "
                     "plugin registers")
    lane: str = Field("default", description="name of the lane this stream joins")
    fps: float | None = Field(None, gt=0, description="cap on frames per second taken from the stream (None = all)")
    decode: Literal["auto", "cpu", "nvdec"] = Field("auto", description="decode back-end; auto = nvdec when available (NVDEC has no MJPEG: cpu for MJPEG cameras)")
    loop: bool = Field(False, description="files only: start again at the end instead of finishing")
    live: bool | None = Field(
        None, description="treat as live (drop oldest, reconnect); default: what the URL's source says (rtsp and "
        "http(s) yes, files no); false reads an http(s) file (http://host/clip.mp4) once, like a local one"
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    decode_threads: int = Field(
        1, ge=0, le=64,
        description="CPU decoder threads for this stream (0 = one per core); 1 is best with many streams, "
        "more helps a single high-resolution stream keep up",
    )
    open_timeout_s: float = Field(5.0, gt=0, description="give up opening after this long, then retry")
    read_timeout_s: float = Field(
        5.0, gt=0, description="a live stream silent this long is reconnected (HLS: bounds each request; a playlist "
        "that stops growing for ~3 segments is reconnected)")
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay; later ones grow with how long the "
                                   "stream has been down (never longer than that), with jitter")
    reconnect_max_s: float = Field(2.0, gt=0, description="longest reconnect delay: a camera that comes back waits "
                                   "up to this long before it is tried again")
    ring_size: int = Field(8, ge=1, description="decoded frames buffered for this stream before the overflow policy acts")

    @field_validator("url")
    @classmethod
    def _readable(cls, url: str) -> str:
        kind = plugins.source_for(url)
        if kind.check is not None:
            kind.check(url)
        return url

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> "StreamConfig":
        if self.reconnect_min_s > self.reconnect_max_s:
            raise KeyPathError(("reconnect_max_s",), f"must be at least reconnect_min_s ({self.reconnect_min_s:g})")
        return self

    @property
    def is_live(self) -> bool:
        """`live` when set, else what the URL's source says (`pipeline.plugins.SourceKind.live`)."""
        return self.live if self.live is not None else plugins.source_for(self.url).is_live(self.url)


class PreprocessConfig(Strict):
    resize: Literal["auto", "letterbox", "stretch"] = Field("auto", description="letterbox keeps aspect ratio; auto follows the head")
    color: Literal["auto", "rgb", "bgr"] = Field("auto", description="channel order the model expects")
    scale: float | None = Field(None, description="pixel multiplier (1/255 for most YOLOs, 1 for YOLOX); auto from the head")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = Field(114, ge=0, le=255)


class DetectorConfig(Strict):
    model: Path = Field(description="ONNX file; every engine loads this same file")
    engine: str = Field("auto", description="auto, or a registered engine: tensorrt, torch, onnxruntime-cuda, onnxruntime")
    device: int = Field(0, ge=0, description="CUDA device index")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", description="GPU engines only; the CPU runs fp32")
    head: Literal["auto", "ultralytics", "yolov5", "yolox", "end2end", "detr"] = Field(
        "auto", description="output layout; auto reads it from the ONNX signature"
    )
    input_size: tuple[int, int] | None = Field(None, description="(width, height); default from the model")
    conf_threshold: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.45, ge=0, le=1)
    max_detections: int = Field(300, ge=1, description="per frame, after NMS")
    classes: list[str] | None = Field(None, description="keep only these class names (None = all)")
    class_names: list[str] | Path | None = Field(None, description="names by class id; a list, a text file, or None for COCO-80")
    preprocess: PreprocessConfig = PreprocessConfig()
    max_batch: int | None = Field(None, ge=1, description="engine batch limit; default: the largest lane max_batch")
    workers: int | None = Field(
        None, ge=1, le=64,
        description="batches in flight at once; default: min(cores, 4) on the CPU (each with cores/workers threads, "
        "which beats one many-threaded run), 1 on a GPU. More raises throughput and latency.",
    )
    engine_cache_dir: Path = Field(Path("~/.cache/streamweave/engines"), description="TensorRT engines and timing caches")
    calibration_frames: int = Field(256, ge=1, description="int8 only: frames sampled from the streams for calibration")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        if name != "auto":
            plugins.engine(name)
        return name


class TrackerConfig(Strict):
    enabled: bool = True
    high_threshold: float = Field(0.4, ge=0, le=1, description="detections above this start and first-match tracks")
    low_threshold: float = Field(0.1, ge=0, le=1, description="second association stage uses detections above this")
    new_track_threshold: float = Field(0.5, ge=0, le=1, description="unmatched detections above this start a track")
    match_iou: float = Field(0.2, ge=0, le=1, description="minimum IoU x detection score for the first association")
    low_match_iou: float = Field(
        0.5, ge=0, le=1, description="minimum IoU for low-score detections; higher keeps clutter off tracks"
    )
    max_lost_frames: int = Field(30, ge=0, description="a track unseen this many frames is ended")
    min_hits: int = Field(2, ge=1, description="frames before a new track is reported")
    coast_frames: int = Field(
        3, ge=0, description="report a lost track's predicted box (score 0) for this many frames; bridges missed detections, 0 = detected rows only"
    )


Point = tuple[float, float]


class ZoneConfig(Strict):
    name: str
    streams: list[str] | None = Field(None, description="streams this zone applies to (None = all)")
    polygon: list[Point] = Field(min_length=3, description="source-pixel vertices")
    classes: list[str] | None = None
    min_score: float = 0.0
    anchor: Literal["bottom_center", "center", "top_center"] = "bottom_center"


class LineConfig(Strict):
    name: str
    streams: list[str] | None = None
    start: Point
    end: Point
    classes: list[str] | None = None
    min_score: float = 0.0
    anchor: Literal["bottom_center", "center", "top_center"] = "bottom_center"


class AlertRule(Strict):
    name: str
    when: Literal["dwell", "cross", "occupancy", "enter", "exit"]
    zone: str | None = None
    line: str | None = None
    direction: Literal["in", "out", "any"] = "any"
    classes: list[str] | None = None
    min_seconds: float = Field(0.0, ge=0, description="dwell: time inside the zone before the alert")
    min_count: int = Field(1, ge=0, description="occupancy: objects in the zone at once")
    debounce_s: float = Field(0.0, ge=0, description="condition must hold this long before firing")
    cooldown_s: float = Field(10.0, ge=0, description="no repeat of this rule for the same track/zone within this time")
    snapshot: bool = True
    clip: bool = False


class StageConfig(Strict):
    """A per-frame Python stage: `Class(stream_id, **options)` per stream, called with each `FrameResult` of
    its stream in order, returning a list of `Event`s (see `pipeline.stages.python`)."""

    python: str = Field(description="'package.module:Class', or the name a plugin registered the stage under")
    options: dict[str, Any] = Field({}, description="keyword arguments for the class")
    streams: list[str] | None = Field(None, description="streams it runs on (None = all)")

    @field_validator("python")
    @classmethod
    def _importable(cls, name: str) -> str:
        if not callable(plugins.stage_factory(name)):
            raise ValueError(f"'{name}' is not a class or function")
        return name


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

DEFAULT_HTTP_PORT = 9108
"""Where a service (`run` without a duration) serves its API, metrics and status unless told otherwise."""


class HttpConfig(Strict):
    """The one HTTP server: the control API (/api), Prometheus /metrics, /status, /healthz, /readyz, /docs."""

    host: str = Field("127.0.0.1", description="address to listen on; anything but loopback needs a token")
    port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535, description="0 = any free port (logged)")
    token: str | None = Field(
        None, min_length=16, description="API calls must carry `Authorization: Bearer <token>`; required when host "
        "is not loopback (16 characters or more; put it in an environment file, not in a shared config)")

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> "HttpConfig":
        if self.token is None and not _loopback(self.host):
            raise KeyPathError(("token",), f"host {self.host!r} is reachable from other machines: set a token "
                                           "(runtime.http.token) or listen on 127.0.0.1")
        return self


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RuntimeConfig(Strict):
    stage_workers: int = Field(
        2, ge=1, description="threads running the per-stream stages (tracker, analytics, plugins); streams are "
        "sharded across them, each stream's frames stay in order on one")
    stage_queue_size: int = Field(
        256, ge=1, description="frame results waiting per stage worker; when full, inference waits (results of the "
        "stages are never dropped)")
    outbox_path: Path = Field(Path("runs/outbox.db"), description="SQLite outbox that holds events until delivered")
    http: HttpConfig | None = Field(
        None, description="the HTTP server (API, metrics, status); a service (`run` without a duration) always has "
        f"one, by default on 127.0.0.1:{DEFAULT_HTTP_PORT}; a run with a duration only when this is set")
    duration_s: float | None = Field(
        None, gt=0, description="stop after this long, then exit (a run); None = a service that runs until stopped; "
        "--duration overrides")
    switch_interval_ms: float | None = Field(
        None, gt=0, le=100,
        description="Python's thread switch interval; None = 0.5 ms with a GPU engine (the inference thread "
        "gets the interpreter back quickly after each GPU wait instead of queueing behind decode threads), "
        "Python's default 5 ms on the CPU",
    )
    decode_processes: Literal["auto"] | Annotated[int, Field(ge=0, le=256)] = Field(
        "auto",
        description="child processes that decode the streams (each with its own interpreter lock; frames come "
        "back through CUDA IPC or the pipe); 0 = decode threads in this process; auto = one process per 8 NVDEC "
        "streams when there are at least 8, else 0",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="how stderr is written: text lines, or one JSON object per line (ts, level, logger, "
        "message, the numbers of progress lines as fields, an exception's traceback as a field) for a log collector")
    progress_interval_s: float = Field(
        1.0, gt=0, description="how often the live table is redrawn when stderr is a terminal (and log_format text)")
    log_interval_s: float = Field(
        10.0, gt=0, description="how often progress is logged (a line per stream and one with the totals) when "
        "stderr is no terminal or log_format is json; a service's heartbeat. Shorter shows changes sooner but "
        "writes a line per stream each time")

    @model_validator(mode="before")
    @classmethod
    def _metrics_aliases(cls, data: Any) -> Any:
        """`metrics_port` and `metrics_host`, the keys of the metrics-only server this replaced: still read."""
        if not isinstance(data, dict) or not ({"metrics_port", "metrics_host"} & set(data)):
            return data
        data = dict(data)
        port, host = data.pop("metrics_port", None), data.pop("metrics_host", "127.0.0.1")
        if port is not None and data.get("http") is None:
            log.warning("runtime.metrics_port and metrics_host are deprecated: use runtime.http: {host, port}")
            data["http"] = {"host": host, "port": port}
        return data


class PipelineConfig(Strict):
    plugins: list[str] = Field(
        [], description="modules imported before the rest of the file is validated: they register source schemes, "
        "engines, sink types and stages (installed packages use the `streamweave.plugins` entry points instead)")
    streams: list[StreamConfig] = Field([], description="at least one for a run with a duration; a service may start "
                                        "with none and get its cameras through the API")
    lanes: list[LaneConfig] = [LaneConfig(name="default")]
    detector: DetectorConfig
    tracker: TrackerConfig = TrackerConfig()
    zones: list[ZoneConfig] = []
    lines: list[LineConfig] = []
    alerts: list[AlertRule] = []
    stages: list[StageConfig] = []
    sinks: list[OutputEntry] = []
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, data: Any) -> Any:
        names = data.get("plugins", []) if isinstance(data, dict) else []
        for i, name in enumerate(names if isinstance(names, list) else []):
            try:
                plugins.load([name])
            except ValueError as exc:
                raise KeyPathError(("plugins", i), str(exc)) from None
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> "PipelineConfig":
        _unique("streams", [s.id for s in self.streams], "id")
        _unique("lanes", [lane.name for lane in self.lanes], "name")
        _unique("zones", [z.name for z in self.zones], "name")
        _unique("lines", [ln.name for ln in self.lines], "name")
        lanes = {lane.name for lane in self.lanes}
        stream_ids = {s.id for s in self.streams}
        for i, s in enumerate(self.streams):
            if s.lane not in lanes:
                raise _at(("streams", i, "lane"), f"unknown lane '{s.lane}'; defined lanes: {sorted(lanes)}")
        for key, items in (("zones", self.zones), ("lines", self.lines), ("stages", self.stages)):
            for i, item in enumerate(items):
                for sid in item.streams or []:
                    if sid not in stream_ids:
                        raise _at((key, i, "streams"), f"unknown stream '{sid}'")
        zones = {z.name for z in self.zones}
        lines = {ln.name for ln in self.lines}
        for i, rule in enumerate(self.alerts):
            if rule.when in ("dwell", "occupancy", "enter", "exit") and rule.zone not in zones:
                raise _at(("alerts", i, "zone"), f"rule '{rule.name}' needs a zone; defined zones: {sorted(zones)}")
            if rule.when == "cross" and rule.line not in lines:
                raise _at(("alerts", i, "line"), f"rule '{rule.name}' needs a line; defined lines: {sorted(lines)}")
        return self


class KeyPathError(ValueError):
    """A cross-field error that knows the key path it belongs to (the loader adds file and line)."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def _at(loc: tuple, message: str) -> KeyPathError:
    return KeyPathError(loc, message)


def _unique(key: str, names: list[str], field: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise _at((key, i, field), f"duplicate {field} '{name}' (first at {key} -> {seen[name]})")
        seen[name] = i
