"""Pydantic models mirroring the YAML file. Keys equal constructor arguments of the stages.

Validators here are pure: probing hardware (is there a GPU? which engine?) happens in `resolve.py`, and
what needs the file system (the model, file streams, writable outputs) in `pipeline.runtime.preflight`.
Every value has a bound (`fields.py`); zones, lines and alert rules live in `analytics.py`, the checks
across sections in `references.py`.
"""
from __future__ import annotations

import inspect
import ipaddress
import logging
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline import plugins
from pipeline.config import references
from pipeline.config.analytics import AlertRule, LineConfig, ZoneConfig
from pipeline.config.cluster import ClusterConfig
from pipeline.config.fields import DAY_S, HOUR_S, FilePath, Fraction, KeyPathError, Name, Strict, StreamId
from pipeline.config.outputs import OutputEntry
from pipeline.config.tracker import TrackerConfig
from pipeline.masking import mask_url

log = logging.getLogger(__name__)


class LaneConfig(Strict):
    name: Name = Field(description="lane name that streams refer to")
    priority: int = Field(0, ge=-1000, le=1000, description="higher is served first when several lanes have work")
    max_batch: int = Field(8, ge=1, le=1024, description="frames per batch; larger batches use the engine better")
    max_wait_ms: float = Field(
        30, ge=0, le=60_000, description="flush a partial batch once its oldest frame waited this long; larger fills batches better but adds latency"
    )
    max_age_ms: float = Field(
        2000, gt=0, le=HOUR_S * 1000, description="live frames older than this are dropped (and counted) instead of detected"
    )


class StreamConfig(Strict):
    id: StreamId = Field(description="unique stream name used in storage and events")
    url: str = Field(min_length=1, max_length=4096, description="file path, rtsp://..., http(s):// (HLS .m3u8, MJPEG, MPEG-TS), or a scheme a "
                     "plugin registers")
    lane: str = Field("default", description="name of the lane this stream joins")
    fps: float | None = Field(None, gt=0, le=1000, description="cap on frames per second taken from the stream (None = all)")
    decode: Literal["auto", "cpu", "nvdec"] = Field("auto", description="decode back-end; auto = nvdec when available (NVDEC has no MJPEG: cpu for MJPEG cameras)")
    loop: bool = Field(False, description="files only: start again at the end instead of finishing")
    pace: bool = Field(False, description="files only: deliver frames at their timestamps' pace, as a camera does "
                       "(ffmpeg -re); a frame the pipeline has no room for is dropped and counted, as a camera's is")
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
    open_timeout_s: float = Field(5.0, gt=0, le=HOUR_S, description="give up opening after this long, then retry")
    read_timeout_s: float = Field(
        5.0, gt=0, le=HOUR_S, description="a live stream silent this long is reconnected (HLS: bounds each request; a playlist "
        "that stops growing for ~3 segments is reconnected)")
    reconnect_min_s: float = Field(0.5, gt=0, le=HOUR_S, description="first reconnect delay; later ones grow with "
                                   "how long the stream has been down (never longer than that), with jitter")
    reconnect_max_s: float = Field(2.0, gt=0, le=DAY_S, description="longest reconnect delay: a camera that comes "
                                   "back waits up to this long before it is tried again")
    ring_size: int = Field(8, ge=1, le=4096, description="decoded frames buffered for this stream before the overflow policy acts")

    @field_validator("url")
    @classmethod
    def _readable(cls, url: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in url):
            raise ValueError("contains a control character (a stray newline or tab?); write the URL on one line")
        kind = plugins.source_for(url)
        if kind.check is not None:
            try:
                kind.check(url)
            except ValueError as exc:  # a source's own message may quote the URL, password and all
                raise ValueError(mask_url(str(exc))) from None
        return url

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> "StreamConfig":
        if self.reconnect_min_s > self.reconnect_max_s:
            raise KeyPathError(("reconnect_max_s",), f"must be at least reconnect_min_s ({self.reconnect_min_s:g})")
        if self.loop and self.is_live:
            raise KeyPathError(("loop",), "only a file can loop, and this stream is live (a camera reconnects when "
                               "it ends); remove loop, or set live: false to read the URL as a file")
        if self.pace and self.is_live:
            raise KeyPathError(("pace",), "only a file can be paced, and this stream is live (it already comes at its "
                               "own pace); remove pace, or set live: false to read the URL as a file")
        return self

    @property
    def is_live(self) -> bool:
        """`live` when set, else what the URL's source says (`pipeline.plugins.SourceKind.live`)."""
        return self.live if self.live is not None else plugins.source_for(self.url).is_live(self.url)

    @property
    def realtime(self) -> bool:
        """Frames come at the source's pace whether the pipeline keeps up or not (a live stream, or a paced
        file): when there is no room for one it is dropped and counted, never waited for."""
        return self.is_live or self.pace


Channel = Annotated[float, Field(ge=-1000, le=1000)]
Spread = Annotated[float, Field(gt=0, le=1000)]
Side = Annotated[int, Field(ge=32, le=8192)]


class PreprocessConfig(Strict):
    resize: Literal["auto", "letterbox", "stretch"] = Field("auto", description="letterbox keeps aspect ratio; auto follows the head")
    color: Literal["auto", "rgb", "bgr"] = Field("auto", description="channel order the model expects")
    scale: float | None = Field(None, gt=0, le=1000,
                                description="pixel multiplier (1/255 for most YOLOs, 1 for YOLOX); auto from the head")
    mean: tuple[Channel, Channel, Channel] = (0.0, 0.0, 0.0)
    std: tuple[Spread, Spread, Spread] = (1.0, 1.0, 1.0)
    pad_value: int = Field(114, ge=0, le=255)


class DetectorConfig(Strict):
    model: FilePath = Field(description="ONNX file, which every engine loads; engine torch also loads TorchScript "
                            "(.torchscript) and torch.export (.pt2) files")
    engine: str = Field("auto", description="auto, or a registered engine: tensorrt, torch, onnxruntime-cuda, onnxruntime")
    device: int = Field(0, ge=0, le=255, description="CUDA device index")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", description="GPU only; torch runs DETR heads fp32")
    head: Literal["auto", "ultralytics", "yolov5", "yolox", "end2end", "rtdetr", "detr"] = Field(
        "auto", description="output layout; auto reads it from the model file (metadata, output names and shapes)"
    )
    input_size: tuple[Side, Side] | None = Field(None, description="(width, height); default from the model")
    conf_threshold: Fraction = 0.25
    iou_threshold: Fraction = 0.45
    max_detections: int = Field(300, ge=1, le=100_000, description="per frame, after NMS")
    max_candidates: int = Field(
        30_000, ge=1, le=1_000_000,
        description="per frame, before NMS: only this many of the highest scores above conf_threshold go to NMS; "
        "bounds NMS time when a model (say one with untrained weights) scores everything, at the cost of boxes "
        "ranked below it")
    classes: list[Name] | None = Field(None, min_length=1, description="keep only these class names (None = all)")
    class_names: Annotated[list[Name], Field(min_length=1)] | FilePath | None = Field(None, description="names by class id; a list, a text file, or None for COCO-80")
    preprocess: PreprocessConfig = PreprocessConfig()
    max_batch: int | None = Field(None, ge=1, le=1024, description="engine batch limit; default: the largest lane max_batch")
    channels_last: bool = Field(False, description="engine torch: weights and activations in NHWC order, which tensor-core "
                                "convolutions prefer; may speed up larger models, measure with benchmarks/heavy_models.py")
    workers: int | None = Field(
        None, ge=1, le=64, description="batches in flight at once; default: min(cores, 4) on the CPU (each with "
        "cores/workers threads, which beats one many-threaded run); 1 on the GPU. With engine torch, 2 runs a twin on "
        "its own CUDA stream (weights shared), but a priority batch then waits behind the other's network.")
    queue_next: bool = Field(True, description="GPU, one worker: queue the next batch before the last is handed on: 12-14% "
                             "more frames/s; a priority batch may wait behind one more batch (docs/GPU.md)")
    engine_cache_dir: FilePath = Field(Path("~/.cache/streamweave/engines"), description="TensorRT engines and timing caches")
    calibration_frames: int = Field(256, ge=1, le=100_000, description="int8 only: frames sampled from the streams for calibration")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        if name != "auto":
            plugins.engine(name)
        return name

    @field_validator("classes", "class_names")
    @classmethod
    def _no_repeats(cls, names: Any) -> Any:
        if isinstance(names, list) and len(set(names)) < len(names):
            raise ValueError(f"names {sorted({n for n in names if names.count(n) > 1})} appear more than once")
        return names


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

    @model_validator(mode="after")
    def _options_fit(self) -> "StageConfig":
        """The options must be keyword arguments the class takes (it is made per stream when the stream starts)."""
        try:
            signature = inspect.signature(plugins.stage_factory(self.python))
        except (TypeError, ValueError):  # no signature Python can read (a builtin): making it will tell
            return self
        try:
            signature.bind("stream", **self.options)
        except TypeError as exc:
            raise KeyPathError(("options",), f"'{self.python}' cannot be made with them ({exc}); it takes "
                               f"{signature}") from None
        return self


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

DEFAULT_HTTP_PORT = 9108
"""Where a service (`run` without a duration) serves its API, metrics and status unless told otherwise."""


class ConsoleConfig(Strict):
    """The web console at `/` (`pipeline.service.console`): live cameras, events, a zone and line editor."""

    enabled: bool = Field(True, description="serve the console at / (same server, binding and token as the API)")
    preview_fps: float = Field(4.0, gt=0, le=30, description="most preview pictures per second per watched camera; "
                               "smoother costs more CPU (none is encoded while nobody watches)")
    preview_max_width: int = Field(1280, ge=64, le=7680, description="widest preview encoded (a large view); the "
                                   "grid asks for less")
    time_zone: str = Field("UTC", min_length=1, max_length=64, description="IANA time zone in which the console's "
                           "'today' begins (counts)")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like UTC or Europe/Paris") from None
        return value


class HttpConfig(Strict):
    """The one HTTP server: the control API (/api), Prometheus /metrics, /status, /healthz, /readyz, /docs,
    and the web console at /."""

    host: str = Field("127.0.0.1", min_length=1, max_length=255, pattern=r"^\S+$", description="address to listen on; anything but loopback needs a token")
    port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535, description="0 = any free port (logged)")
    token: str | None = Field(
        None, min_length=16, description="API calls must carry `Authorization: Bearer <token>`; required when host "
        "is not loopback (16 characters or more; put it in an environment file, not in a shared config)")
    console: ConsoleConfig = ConsoleConfig()

    @field_validator("token")
    @classmethod
    def _sendable(cls, token: str | None) -> str | None:
        # HTTP strips the spaces around a header's value and reads its bytes as Latin-1: no client could match it
        if token is not None and not re.fullmatch(r"[!-~]+", token):
            raise ValueError("use ASCII letters, digits and punctuation only (no spaces, line ends or accented "
                             "letters): clients send it in the Authorization header")
        return token

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


def default_instance() -> str:
    """$STREAMWEAVE_INSTANCE, else the host name: what names this instance in a fleet."""
    return os.environ.get("STREAMWEAVE_INSTANCE") or socket.gethostname()


class RuntimeConfig(Strict):
    stage_workers: int = Field(
        2, ge=1, le=256, description="threads running the per-stream stages (tracker, analytics, plugins); streams are "
        "sharded across them, each stream's frames stay in order on one")
    stage_queue_size: int = Field(
        256, ge=1, le=100_000, description="frame results waiting per stage worker; when full, inference waits (results of the "
        "stages are never dropped)")
    outbox_path: FilePath = Field(Path("runs/outbox.db"), description="SQLite outbox that holds events until delivered")
    http: HttpConfig | None = Field(
        None, description="the HTTP server (API, metrics, status); a service (`run` without a duration) always has "
        f"one, by default on 127.0.0.1:{DEFAULT_HTTP_PORT}; a run with a duration only when this is set")
    duration_s: float | None = Field(
        None, gt=0, le=366 * DAY_S, description="stop after this long, then exit (a run); None = a service that runs until stopped; "
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
        "streams once there are 8 (cameras added while running count too), the first 7 in threads",
    )
    instance: str = Field(default_factory=default_instance, min_length=1, max_length=128,
        description="this instance's name in a fleet: in stored rows, MQTT payloads and the cluster's leases; "
        "default: $STREAMWEAVE_INSTANCE, else the host name")
    cluster: ClusterConfig | None = Field(
        None, description="share the fleet's cameras with other instances through leases in PostgreSQL; the "
        "cameras, zones, lines and alert rules then live in the database (`fleet import`), and `streams:`, "
        "`zones:`, `lines:` and `alerts:` stay empty")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="how stderr is written: text lines, or one JSON object per line (ts, level, logger, "
        "message, the numbers of progress lines as fields, an exception's traceback as a field) for a log collector")
    progress_interval_s: float = Field(
        1.0, gt=0, le=HOUR_S, description="how often the live table is redrawn when stderr is a terminal (and log_format text)")
    log_interval_s: float = Field(
        10.0, gt=0, le=DAY_S, description="how often progress is logged (a line per stream and one with the totals) when "
        "stderr is no terminal or log_format is json; a service's heartbeat. Shorter shows changes sooner but "
        "writes a line per stream each time")

    @model_validator(mode="before")
    @classmethod
    def _metrics_aliases(cls, data: Any) -> Any:
        """`metrics_port` and `metrics_host`, the keys of the metrics-only server this replaced: still read."""
        if not isinstance(data, dict) or not ({"metrics_port", "metrics_host"} & set(data)):
            return data
        data = dict(data)
        port, host = data.pop("metrics_port", None), data.pop("metrics_host", None)
        log.warning("runtime.metrics_port and metrics_host are deprecated: use runtime.http: {host, port}")
        if port is None:  # the old example's `metrics_port: null`: no server, as before
            return data
        if data.get("http") is not None:
            raise ValueError("metrics_port and metrics_host are the old keys of http: give http: {host, port} alone")
        if isinstance(port, str) and port.strip().isdigit():  # from ${VAR}, or quoted
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"metrics_port {port!r} is no port: give http: {{port: 0 to 65535}} instead")
        data["http"] = {"host": host or "127.0.0.1", "port": port}
        return data


class PipelineConfig(Strict):
    plugins: list[str] = Field(
        [], description="modules imported before the rest of the file is validated: they register source schemes, "
        "engines, sink types and stages (installed packages use the `streamweave.plugins` entry points instead)")
    streams: list[StreamConfig] = Field([], description="at least one for a run with a duration; a service may start "
                                        "with none and get its cameras through the API")
    lanes: list[LaneConfig] = Field([LaneConfig(name="default")], min_length=1)
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
            if not isinstance(name, str):
                continue  # the field's own validation names it
            try:
                plugins.load([name])
            except ValueError as exc:
                raise KeyPathError(("plugins", i), str(exc)) from None
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> "PipelineConfig":
        if self.runtime.cluster is not None:
            if self.streams:
                raise KeyPathError(("streams",), "must be empty with runtime.cluster: the fleet's cameras live in its "
                                   "database; import them with `run_pipeline.py fleet import FILE --dsn DSN`")
            for key in ("zones", "lines", "alerts"):
                if getattr(self, key):
                    raise KeyPathError((key,), f"must be empty with runtime.cluster: the fleet's {key} live in its "
                                       "database; import them with `run_pipeline.py fleet import FILE --dsn DSN`, or "
                                       "set them through any instance's API or console")
        references.check(self)
        return self
