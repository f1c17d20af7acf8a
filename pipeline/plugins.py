"""What the pipeline can be extended with, registered in one place: source URL schemes, inference
engines, outputs (`sinks:` types) and per-stream stages.

A plugin is a module that calls the `register_*` functions below when it is imported. Installed
packages name such modules in the entry-point group `streamweave.plugins`:

    [project.entry-points."streamweave.plugins"]
    thermal = "acme_thermal.streamweave"

and code that is not installed is named in the config's top-level `plugins: [package.module, ...]`
list, imported before the rest of the file is validated. The built-in sources, engines and
outputs are registered the same way, by dotted path (`"module:attribute"`), so that nothing is
imported before it is used.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pipeline.machine import Machine

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streamweave.plugins"

Factory = Callable[..., Any] | str
"""A callable, or the dotted path `"package.module:attribute"` of one (imported on first use)."""


@dataclass(frozen=True)
class SourceKind:
    """A URL scheme and how to read it.

    opener: makes a `pipeline.sources.reader.Reader` for one pass (see `pipeline.sources.open_reader`):
    `(config, packet_tap)` for a source that decodes itself, `(config, make_decoder, packet_tap, shelf)`
    for one that demuxes (`decodes=False`). live: whether a URL of this scheme is a live camera by default
    (drop the oldest frame when behind, reconnect when it ends); a bool or a function of the URL.
    check: raises ValueError naming what is wrong with a URL (run when the config is validated).
    decodes: True when the source decodes itself and yields pictures; False when it demuxes and the
    pipeline's decoders (NVDEC or the CPU) decode its packets.
    """

    scheme: str
    opener: Factory
    live: bool | Callable[[str], bool] = False
    check: Callable[[str], None] | None = None
    decodes: bool = True

    def is_live(self, url: str) -> bool:
        return self.live(url) if callable(self.live) else self.live


@dataclass(frozen=True)
class EngineKind:
    """An inference engine.

    factory: `(model_path, detector_config, detector_plan) -> Engine`. unavailable: `(Machine) -> str |
    None`, why it cannot run on this machine (None: it can). auto_rank: its place in `engine: auto`
    (lower is tried first; None: only when named). gpu: it runs on the GPU. device: its outputs stay on
    the GPU (the detector's GPU post-processing runs on them). concurrent: several batches may run through it at once (host
    engines). twins: a device engine that makes twins (`engine.twin()`: the same weights, its own CUDA stream,
    buffers and graphs), so several batches may be in flight, one per twin. model_info: `(model_path) -> (ModelSignature, metadata)`; None reads the ONNX file. formats: the
    model formats it loads (`model_format`). trial: `(model_path) -> str | None`, why it cannot load this model
    (None: it can), tried on the CPU before `engine: auto` picks it, so a model it cannot take goes to the next.
    """

    name: str
    factory: Factory
    unavailable: Callable[[Machine], str | None] = lambda machine: None
    auto_rank: int | None = None
    gpu: bool = False
    device: bool = False
    concurrent: bool = False
    twins: bool = False
    model_info: Factory | None = None
    formats: tuple[str, ...] = ("onnx",)
    trial: Factory | None = None


@dataclass(frozen=True)
class OutputKind:
    """A `sinks:` entry type.

    config: its pydantic model (with `type: Literal["<name>"]`). factory: `(config, context) -> Sink`
    for frame sinks or `-> EventOutput` for event outputs (`pipeline.sinks.base`); context is
    `pipeline.sinks.base.OutputContext`. events: True for an event output, which the durable outbox
    feeds; False for a frame sink, which gets every frame's result through its own queue (or a function
    of the config entry saying which). writes: the key of its config that names the file (`("path",
    "file")`) or folder (`("directory", "folder")`) it writes, if any: before a run it is checked to be
    writable, and no two sinks may write the same one.
    """

    type: str
    config: type
    factory: Factory
    events: bool | Callable[[Any], bool] = False
    writes: tuple[str, Literal["file", "folder"]] | None = None

    def __post_init__(self) -> None:
        if self.writes is None:
            return
        fields = getattr(self.config, "model_fields", {})
        if isinstance(self.writes, list) and len(self.writes) == 2:  # a pair all the same
            object.__setattr__(self, "writes", tuple(self.writes))
        if not (isinstance(self.writes, tuple) and len(self.writes) == 2):
            why = "writes names its config's key and whether it is a file or a folder, e.g. writes=('path', 'file')"
        elif self.writes[0] not in fields:
            why = f"writes={self.writes!r}, but its config ({self.config.__name__}) has no field '{self.writes[0]}'"
        elif self.writes[1] not in ("file", "folder"):
            why = f"writes={self.writes!r}: its second item is 'file' or 'folder'"
        else:
            return
        raise ValueError(f"sink type '{self.type}': {why}")


_sources: dict[str, SourceKind] = {}
_engines: dict[str, EngineKind] = {}
_outputs: dict[str, OutputKind] = {}
_stages: dict[str, Factory] = {}
_loaded: set[str] = set()
_entry_points_loaded = False


def register_source(kind: SourceKind) -> None:
    _sources[kind.scheme] = kind


def register_engine(kind: EngineKind) -> None:
    _engines[kind.name] = kind


def register_output(kind: OutputKind) -> None:
    _outputs[kind.type] = kind


def register_stage(name: str, factory: Factory) -> None:
    """A per-frame stage class usable as `stages: [{python: <name>}]` (see `pipeline.stages.python`)."""
    _stages[name] = factory


# -- lookups -----------------------------------------------------------------------------------------
def source_for(url: str) -> SourceKind:
    """The source that reads `url`; ValueError naming the known schemes when none does, or saying what to
    use instead for a scheme that is not read yet (`NOT_READ`) unless a plugin registered it."""
    scheme = _scheme(url)
    kind = _sources.get(scheme)
    if kind is None and scheme in NOT_READ:
        raise ValueError(f"'{scheme}://' URLs are not read yet: {NOT_READ[scheme]}")
    if kind is None:
        known = sorted(f"{s}://" for s in _sources if s)
        raise ValueError(f"no source reads '{scheme}://' URLs; known schemes: {known} and file paths "
                         "(a plugin's scheme needs the plugin in the config's `plugins:` list)")
    return kind


def local_path(url: str) -> Path | None:
    """The file `url` names when it is a local path (no scheme, or `file:`, which FFmpeg strips), else None."""
    scheme = _scheme(url)
    if scheme == "file":
        return Path(url[len("file:"):])
    return Path(url) if scheme == "" else None


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return "" if len(scheme) <= 1 else scheme  # "" and Windows drive letters are file paths


MODEL_FORMATS = {".torchscript": "torchscript", ".pt2": "torch.export"}
"""Model file suffixes other than ONNX; every other file is read as ONNX."""
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "torch.export": "torch.export (.pt2)"}


def model_format(path: str | Path) -> str:
    """"onnx", "torchscript" or "torch.export", from a model file's suffix."""
    return MODEL_FORMATS.get(Path(path).suffix.lower(), "onnx")


def engine(name: str) -> EngineKind:
    try:
        return _engines[name]
    except KeyError:
        raise ValueError(f"unknown engine '{name}'; known: {engine_names()}") from None


def engine_names() -> list[str]:
    return sorted(_engines)


def engines_by_rank() -> list[EngineKind]:
    """The engines `engine: auto` may pick, best first."""
    ranked = [kind for kind in _engines.values() if kind.auto_rank is not None]
    return sorted(ranked, key=lambda kind: kind.auto_rank)


def output(type_: str) -> OutputKind:
    try:
        return _outputs[type_]
    except KeyError:
        raise ValueError(f"unknown sink type '{type_}'; known: {sorted(_outputs)}") from None


def stage_factory(name: str) -> Callable[..., Any]:
    """The class a `stages:` entry names: a registered stage name or `"package.module:Class"`."""
    if name in _stages:
        return resolve(_stages[name])
    if ":" not in name:
        raise ValueError(f"'{name}' is neither a registered stage {sorted(_stages)} nor 'package.module:Class'")
    return resolve(name)


def resolve(factory: Factory) -> Callable[..., Any]:
    """A factory itself, or the object a `"package.module:attribute"` path names (imported now)."""
    if callable(factory):
        return factory
    module_name, _, attribute = factory.partition(":")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import '{module_name}' ({exc}); is it installed or on PYTHONPATH?") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module '{module_name}' has no '{attribute}'") from None


# -- loading -----------------------------------------------------------------------------------------
def load(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import the installed plugins (entry points, once per process), then each of `modules` (found on
    `sys.path`, to which the working directory is appended).

    Raises ValueError naming the module that cannot be imported.
    """
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except Exception as exc:  # noqa: BLE001 - a broken installed plugin must not stop the others
                log.error("plugin '%s' (%s) failed to load: %s", point.name, point.value, exc)
    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # modules named in a config may live beside it, like `samples` in a checkout
    for name in modules:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"plugin {name!r} is not a module name; give its dotted import path, e.g. samples.world")
        if name not in _loaded:
            try:
                _import(name)
            except ImportError as exc:
                raise ValueError(f"plugin module '{name}' cannot be imported ({exc}); "
                                 "check the name and that its folder is on PYTHONPATH") from None
            except ValueError as exc:
                raise ValueError(f"plugin {exc}") from None
            _loaded.add(name)


def _import(name: str) -> Any:
    """The module `name`; ImportError when it is not found, ValueError naming
    what it raised and the line where when its own code fails (a syntax error, a raise at import time)."""
    if not all(part.isidentifier() for part in name.split(".")):  # importlib reads ".x" as relative to nothing
        raise ImportError(f"{name!r} is not a dotted module name")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise
    except SyntaxError as exc:
        failure = f"SyntaxError at {exc.filename}:{exc.lineno}: {exc.msg}"
    except Exception as exc:  # noqa: BLE001 - a module's own code may raise anything while it is imported
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        failure = f"{type(exc).__name__} at {frame.filename}:{frame.lineno}: {exc}"
    raise ValueError(f"module '{name}' failed while imported: {failure}; fix it there")


def loaded() -> list[str]:
    """The modules `load` imported, in order (decode processes import them again)."""
    return sorted(_loaded)


# -- the built-in ones -------------------------------------------------------------------------------
_RTMP = ("publish the stream to an RTSP server (MediaMTX, say) and read its rtsp:// URL, or read the "
         "server's HLS playlist (http://.../index.m3u8)")
NOT_READ = {
    "rtmp": _RTMP,
    "rtmps": _RTMP,
    "v4l2": ("serve the device through an RTSP server (MediaMTX, or ffmpeg pushing /dev/videoN to one) and "
             "read its rtsp:// URL, or register a source plugin for v4l2://"),
}
"""Schemes that are refused when a config is validated until they can be tested, with what to use instead."""

_LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "srt")
# http(s) are cameras (HLS, MJPEG, MPEG-TS): reconnected when they end; `live: false` reads a file once
for _scheme_name in ("", "file", "rtsp", "rtsps", "http", "https", "udp", "tcp", "srt"):
    register_source(SourceKind(_scheme_name, "pipeline.sources.pyav:open_pyav", live=_scheme_name in _LIVE_SCHEMES,
                               decodes=False))


def _needs(*modules: str, gpu: bool = True, provider: str | None = None) -> Callable[[Machine], str | None]:
    """Why an engine needing a GPU, `modules` and an onnxruntime `provider` cannot run on a machine."""

    def unavailable(machine: Machine) -> str | None:
        reasons = ["no CUDA GPU found"] if gpu and not machine.gpu else []
        reasons += [f"{_LABELS.get(m, m)} not installed" for m in modules if m not in machine.modules]
        if provider is not None and provider not in machine.ort_providers:
            reasons.append(f"onnxruntime has no {provider}")
        return "; ".join(reasons) or None

    return unavailable


_LABELS = {"tensorrt": "TensorRT"}
register_engine(EngineKind("tensorrt", "pipeline.detect.engines.tensorrt_engine:create",
                           _needs("tensorrt", "cupy"), auto_rank=0, gpu=True, device=True))
register_engine(EngineKind("torch", "pipeline.detect.engines.torch_engine:create",
                           _needs("torch", "onnx2torch", "cupy"), auto_rank=1, gpu=True, device=True, twins=True,
                           model_info="pipeline.detect.engines.torch_convert:read_model_info",
                           formats=("onnx", "torchscript", "torch.export"),
                           trial="pipeline.detect.engines.torch_convert:trial"))
register_engine(EngineKind("onnxruntime-cuda", "pipeline.detect.engines.onnxruntime:create_cuda",
                           _needs(provider="CUDAExecutionProvider"), auto_rank=2, gpu=True))
register_engine(EngineKind("onnxruntime", "pipeline.detect.engines.onnxruntime:create",
                           _needs(gpu=False), auto_rank=3, concurrent=True))
