"""The one place where every `auto` and every default that depends on the machine is decided.

    plan = resolve(config)            # probes this machine once (pipeline.machine.probe)
    print(plan.describe())            # what `run_pipeline.py validate --plan CONFIG` prints

`resolve(config, machine)` is a function of the validated config and a `Machine` (and, when `engine: auto`
would take the torch engine, of whether the model converts: tried on the CPU): the engine and why, each stream's decoder and whether it decodes in a child process, the decode-process count, the
batch limit and the batch sizes GPU engines run at, worker counts, the thread switch interval, and
warnings. The built pipeline only reads the `Plan`; a stream added while running gets its `StreamPlan`
from `plan_stream` under the same rules.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline import plugins
from pipeline.config.models import DetectorConfig, PipelineConfig, StreamConfig
from pipeline.errors import ConfigError
from pipeline.machine import Machine, probe

log = logging.getLogger(__name__)

STREAMS_PER_PROCESS = 8
"""`decode_processes: auto` starts one child per this many NVDEC streams, once there are that many."""

CLIP_SLACK_S = 5.0
"""Packets kept beyond `clip_before_s`: events reach the media sink later than packets leave the demuxer."""

GPU_SWITCH_INTERVAL_S = 0.0005
"""With a GPU engine the inference thread gets the interpreter back quickly after each GPU wait instead of
queueing behind decode threads (Python's default is 5 ms)."""

CPU_SWITCH_INTERVAL_S = 0.005

@dataclass(frozen=True)
class DetectorPlan:
    """engine and reason: what runs the model and why. max_batch: the largest batch handed to it.
    buckets: the batch sizes a GPU engine runs at (a CUDA graph each); empty for host engines.
    workers: batches in flight at once. threads: CPU threads per batch (host engines). device: CUDA index.
    on_gpu: the engine runs on the GPU. on_device: its outputs stay there (GPU post-processing)."""

    engine: str
    reason: str
    max_batch: int
    buckets: tuple[int, ...]
    workers: int
    threads: int
    device: int
    on_gpu: bool
    on_device: bool


@dataclass(frozen=True)
class StreamPlan:
    """How one stream is read. decoder: "nvdec", "cpu", or "source" (its source decodes itself).
    in_child: decoded in a decode process. live: drop the oldest frame when behind, reconnect when it ends.
    packet_ring_s: seconds of packets kept for event clips (0: none)."""

    id: str
    decoder: str
    in_child: bool
    live: bool
    packet_ring_s: float


@dataclass(frozen=True)
class Plan:
    machine: Machine
    detector: DetectorPlan
    streams: tuple[StreamPlan, ...]
    decode_processes: int  # children at most, started as streams need them (0: every stream in a thread here)
    children_take: str  # which streams go to children: "nvdec", "all" or "none"
    per_child: int  # `auto`: a new child once each has this many streams, and NVDEC streams go to children only
    # once there are this many; 0 (a count set in the config): every stream to a child, spread over all of them
    packet_ring_s: float
    switch_interval_s: float
    plugins: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def stream(self, stream_id: str) -> StreamPlan:
        return next(s for s in self.streams if s.id == stream_id)

    def _mps_note(self) -> str:
        nvdec_in_children = any(s.in_child and s.decoder == "nvdec" for s in self.streams)
        if not (nvdec_in_children and self.detector.on_gpu) or self.machine.mps:
            return ""
        return ("; they take turns with the detector on the GPU: starting MPS (`nvidia-cuda-mps-control -d`) "
                "gave 12-21% more frames/s with heavy models (docs/GPU.md)")

    def _children_text(self) -> str:
        if not self.decode_processes:
            return "none"
        if self.per_child:
            return (f"one per {self.per_child} NVDEC streams once there are {self.per_child}, streams added later "
                    f"included (at most {self.decode_processes})")
        return f"up to {self.decode_processes}, for {self.children_take} streams"

    def describe(self) -> str:
        d = self.detector
        lines = [f"machine: {self.machine.describe()}",
                 f"engine: {d.reason}",
                 f"batches: up to {d.max_batch}" + (f", run at sizes {list(d.buckets)}" if d.buckets else "")
                 + f"; {d.workers} in flight" + (f", {d.threads} thread{'s' if d.threads > 1 else ''} each" if not d.on_device else ""),
                 "decode processes: " + self._children_text() + self._mps_note(),
                 f"thread switch interval: {self.switch_interval_s * 1000:g} ms"]
        if self.plugins:
            lines.append(f"plugins: {', '.join(self.plugins)}")
        lines += [f"stream {s.id}: {'live' if s.live else 'file'}, decoder {s.decoder}, "
                  f"{'in a decode process' if s.in_child else 'in a thread here'}"
                  + (f", {s.packet_ring_s:g} s of packets for clips" if s.packet_ring_s else "") for s in self.streams]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def resolve(config: PipelineConfig, machine: Machine | None = None) -> Plan:
    """The plan for `config` on `machine` (this one when None). Raises ConfigError for what cannot run here."""
    machine = machine or probe(config.detector.device)
    warnings: list[str] = []
    largest_lane = max(lane.max_batch for lane in config.lanes)
    detector = detector_plan(config.detector, largest_lane, machine, warnings)
    decoders = {s.id: stream_decoder(s, machine, detector.on_device) for s in config.streams}
    count, take, per_child = _decode_processes(config, machine)
    plan = Plan(machine, detector, (), count, take, per_child, packet_ring_s(config),
                _switch_interval(config, detector), tuple(config.plugins), tuple(warnings))
    nvdec = sum(decoder == "nvdec" for decoder in decoders.values())
    return replace(plan, streams=tuple(plan_stream(s, plan, decoders[s.id], nvdec) for s in config.streams))


def plan_stream(stream: StreamConfig, plan: Plan, decoder: str | None = None, nvdec_streams: int = 0) -> StreamPlan:
    """How `stream` is read under `plan` (also for a stream added while the pipeline runs); ConfigError
    when it asks for a decoder the plan's machine does not have. nvdec_streams: the NVDEC streams the pipeline
    will have with this one (`auto` puts them in children once there are `per_child`)."""
    decoder = decoder or stream_decoder(stream, plan.machine, plan.detector.on_device)
    takes = plan.children_take == "all" or (plan.children_take == "nvdec" and decoder == "nvdec")
    in_child = plan.decode_processes > 0 and takes and nvdec_streams >= plan.per_child
    return StreamPlan(stream.id, decoder, in_child, stream.is_live, plan.packet_ring_s)


def detector_plan(config: DetectorConfig, max_batch: int | None = None, machine: Machine | None = None,
                  warnings: list[str] | None = None) -> DetectorPlan:
    """Engine, batch sizes and workers for `config`; `max_batch` is the caller's largest batch
    (`detector.max_batch` wins, else 8). Raises ConfigError when a named engine cannot run here."""
    machine = machine or probe(config.device)
    name, reason = _engine(config, machine)
    kind = plugins.engine(name)
    if kind.gpu and machine.cuda_devices is not None and config.device >= machine.cuda_devices:
        raise ConfigError(f"detector.device {config.device} does not exist: engine {name} runs on a CUDA device and "
                          f"this machine has {machine.cuda_devices} (numbered from 0, as CUDA_VISIBLE_DEVICES leaves "
                          "them); set detector.device to one of them")
    limit = config.max_batch or max_batch or 8
    if kind.concurrent:
        workers = config.workers or min(machine.cores, 4)
    elif kind.twins:  # one batch in flight unless asked: a second on a twin raises a heavy model's throughput a
        # little but delays the priority lane's batches behind the other's network (docs/GPU.md)
        workers = config.workers or 1
    else:
        workers = 1
        if config.workers and config.workers > 1:
            _warn(warnings, f"detector.workers {config.workers} ignored: engine {name} runs one batch at a time")
    buckets = tuple(batch_buckets(limit)) if kind.device else ()
    return DetectorPlan(name, reason, limit, buckets, workers, max(1, machine.cores // workers), config.device,
                        kind.gpu, kind.device)


def _warn(warnings: list[str] | None, message: str) -> None:
    if warnings is None:
        log.warning("%s", message)
    else:
        warnings.append(message)


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes the GPU engines run at: powers of two below `max_batch`, then `max_batch` itself.

    Few sizes, so each gets a CUDA graph, and the GPU post-processing (CuPy kernels, which CuPy
    compiles per array shape it meets) sees few shapes, all compiled at warm-up."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def _engine(config: DetectorConfig, machine: Machine) -> tuple[str, str]:
    """The engine and why. `auto` takes the best one that runs here and reads the model's format; one with a
    `trial` (torch: convert the model on the CPU) must also load this model, else the next is taken and the
    reason logged. A named engine is taken as it is (its load errors come when it is built)."""
    fmt = plugins.model_format(config.model)
    if config.engine != "auto":
        kind = plugins.engine(config.engine)
        why = kind.unavailable(machine) or _format_problem(kind, fmt)
        if why is not None:
            raise ConfigError(f"detector.engine '{config.engine}' cannot run here ({why}); "
                              "use engine: auto or install what it needs")
        return config.engine, f"{config.engine}: requested by detector.engine"
    skipped: list[str] = []
    for kind in plugins.engines_by_rank():
        why = kind.unavailable(machine) or _format_problem(kind, fmt)
        if why is None and kind.trial is not None and Path(config.model).expanduser().is_file():
            failed = plugins.resolve(kind.trial)(config.model)
            if failed is None:
                return kind.name, f"{kind.name}: " + (_summary(skipped) or "best available") + \
                    f"; '{Path(config.model).name}' loads in it (tried on the CPU)"
            log.warning("engine auto: %s cannot load '%s' (%s); trying the next engine", kind.name, config.model, failed)
            skipped.append(f"{kind.name} cannot load the model ({failed})")
            continue
        if why is None:
            return kind.name, f"{kind.name}: " + (_summary(skipped) or "best available")
        skipped += why.split("; ")
    raise ConfigError(f"no inference engine can run here: {_summary(skipped)}")


def _format_problem(kind: plugins.EngineKind, fmt: str) -> str | None:
    if fmt in kind.formats:
        return None
    readable = " and ".join(plugins.FORMAT_NAMES[f] for f in kind.formats)
    readers = [name for name in plugins.engine_names() if fmt in plugins.engine(name).formats]
    return (f"{kind.name} reads {readable} files, not {plugins.FORMAT_NAMES[fmt]}"
            + (f": engine {' or '.join(readers)} does" if readers else ""))


def _summary(reasons: list[str]) -> str:
    """Reasons without repeats, the missing packages named together: 'no CUDA GPU found; TensorRT and
    cupy not installed; ...'."""
    suffix = " not installed"
    missing = list(dict.fromkeys(r[: -len(suffix)] for r in reasons if r.endswith(suffix)))
    others = list(dict.fromkeys(r for r in reasons if not r.endswith(suffix)))
    return "; ".join(others[:1] + ([" and ".join(missing) + suffix] if missing else []) + others[1:])


def stream_decoder(stream: StreamConfig, machine: Machine, device_frames: bool = True) -> str:
    """"nvdec", "cpu" or "source" for `stream` on `machine`; ConfigError when `decode: nvdec` cannot run.
    device_frames: the engine takes frames on the GPU; when it does not (ONNX Runtime, say after the torch
    engine could not load the model), `decode: auto` decodes on the CPU."""
    if plugins.source_for(stream.url).decodes:
        return "source"
    if stream.decode == "nvdec" and not machine.nvdec:
        raise ConfigError(f"stream '{stream.id}': decode 'nvdec' cannot run here ({machine.nvdec_reason}); "
                          "set decode: cpu (or auto) for this stream, or install the gpu extra")
    wanted = stream.decode == "nvdec" or (stream.decode == "auto" and device_frames)
    return "nvdec" if wanted and machine.nvdec else "cpu"


def _decode_processes(config: PipelineConfig, machine: Machine) -> tuple[int, str, int]:
    """(children at most, which streams they take, streams per child). An integer puts every stream in up to
    that many children (started as streams need them, so streams added later may use them too); auto puts the
    NVDEC streams there, one child per `STREAMS_PER_PROCESS`, once the pipeline has that many: in the config
    or added while it runs (a service started without cameras, an instance of a fleet)."""
    setting = config.runtime.decode_processes
    if setting != "auto":
        return setting, "all" if setting else "none", 0
    if not machine.nvdec:
        return 0, "none", 0
    return machine.cores, "nvdec", STREAMS_PER_PROCESS


def packet_ring_s(config: PipelineConfig) -> float:
    """Seconds of packets each stream keeps for event clips: only when a media sink will ask for clips."""
    rules_ask = any(rule.clip for rule in config.alerts)
    before = [entry.clip_before_s for entry in config.sinks
              if entry.type == "media" and (entry.clips or (entry.clips is None and rules_ask))]
    return max(before) + CLIP_SLACK_S if before else 0.0


def _switch_interval(config: PipelineConfig, detector: DetectorPlan) -> float:
    configured = config.runtime.switch_interval_ms
    if configured is not None:
        return configured / 1000
    return GPU_SWITCH_INTERVAL_S if detector.on_gpu else CPU_SWITCH_INTERVAL_S
