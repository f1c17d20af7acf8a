"""Command line: run, validate, query, detect, track, build-engine, bench, fleet. `python run_pipeline.py --help`.

A run or service reloads its config file on SIGHUP (see `pipeline.service.control`); SIGINT and SIGTERM stop it,
draining what is buffered.

Exit codes: 0 every stream ended as expected, 1 an internal error, 2 a config error (nothing started),
3 some streams failed, 4 every stream failed (the summary says why each failed).

stderr carries the log (text, or one JSON object per line with `runtime.log_format: json`) and, on a
terminal, the live table; stdout carries the final summary table.
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from pathlib import Path

from pipeline import logs
from pipeline.errors import ConfigError, PipelineError

log = logging.getLogger("pipeline")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (`query`, `detect`, `track` and `bench` parse their own arguments)."""
    # No fixed prog: usage names what was run, `run_pipeline.py` in a checkout or `streamweave` when installed.
    parser = argparse.ArgumentParser(description="Multi-stream video analytics pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config until its files end, --duration passes, or Ctrl-C")
    run.add_argument("config")
    run.add_argument("--duration", type=_seconds, default=None, help="stop after this many seconds")
    run.add_argument("--quiet", action="store_true",
                     help="no progress (neither the live table nor progress lines), only the summary")
    run.add_argument("--shard", metavar="I/N", default=None,
                     help="run only the streams whose id hashes to shard I of N (0 <= I < N), now and after "
                          "reloads; auto/N takes I from the host name's trailing -<n> (a StatefulSet's pod)")
    run.add_argument("--port", type=_port, default=None,
                     help="the HTTP server's port instead of runtime.http.port (instances sharing one config)")
    run.add_argument("--outbox", metavar="PATH", default=None,
                     help="the outbox file instead of runtime.outbox_path (instances sharing one config and disk)")
    run.add_argument("--instance", metavar="NAME", default=None,
                     help="this instance's name instead of runtime.instance "
                          "($STREAMWEAVE_INSTANCE, else the host name)")
    run.add_argument("--gpus", metavar="all|0,1|N", default=None,
                     help="supervise one instance per GPU (all of them, these indices, or the first N), each "
                          "seeing only its GPU, on port + k, with its own outbox; restarted when it dies")
    validate = sub.add_parser("validate", help="check a config file without running it")
    validate.add_argument("config")
    validate.add_argument("--plan", action="store_true",
                          help="also print how it would run here: engine and why, decoders, processes, batch sizes")
    build = sub.add_parser("build-engine", help="build the TensorRT engine of a config ahead of time")
    build.add_argument("config")
    sub.add_parser("query", help="answers from stored results: line counts, zone visits, events (see query --help)",
                   add_help=False)
    sub.add_parser("detect", help="run a model on images/videos, write COCO results JSON (see detect --help)", add_help=False)
    sub.add_parser("track", help="track MOTChallenge detections (see track --help)", add_help=False)
    sub.add_parser("bench", help="cameras this machine runs in real time, with latency and ceilings (see bench --help)",
                   add_help=False)
    sub.add_parser("fleet", help="the cameras of a fleet sharing them through PostgreSQL: import, list (see fleet "
                   "--help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["query"], ["detect"], ["track"], ["bench"], ["fleet"]):
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logs.configure()  # text; `run` switches to its config's runtime.log_format once the config is read
    try:
        if args.command == "validate":
            return _validate(args.config, args.plan)
        if args.command == "build-engine":
            return _build_engine(args.config)
        if args.gpus is not None:
            from pipeline.service.supervisor import supervise_command

            return supervise_command(args)
        return _run(args.config, args.duration, args.quiet, _placement(args))
    except ConfigError as exc:
        _report(f"config error:\n{exc}")
        return 2
    except PipelineError as exc:
        _report(f"error: {exc}")
        return 1
    except Exception:
        log.exception("internal error")  # through the log handler, so a JSON log stays JSON
        return 1


def _report(message: str) -> None:
    """An error that ends the command: as it is on a text log, as a JSON line on a JSON one."""
    if logs.current_format() == "json":
        log.error("%s", message)
    else:
        print(message, file=sys.stderr)


def _delegate(command: str, argv: list[str]) -> int:
    prog = f"{build_parser().prog} {command}"  # its usage names the command as run, as the others' do
    if command == "query":
        from pipeline.sinks.storage.cli import query_command

        return query_command(argv, prog=prog)
    if command == "detect":
        from pipeline.detect.offline import detect_command

        return detect_command(argv, prog)
    if command == "bench":
        from pipeline.bench.cli import bench_command

        return bench_command(argv, prog)
    if command == "fleet":
        from pipeline.cluster.cli import fleet_command

        return fleet_command(argv, prog=prog)
    from pipeline.stages.tracking.cli import track_command

    return track_command(argv, prog)


def _validate(path: str, show_plan: bool) -> int:
    """The file, then what only this machine can tell: the plan (an engine or decoder it lacks), the model,
    file streams, writable outputs."""
    from pipeline.config import load_config
    from pipeline.config.resolve import resolve

    config = load_config(path)
    _streams_for(path, config, config.runtime.duration_s)
    plan = resolve(config)
    _preflight(path, config, plan)
    print(f"{path}: OK ({len(config.streams)} streams, {len(config.lanes)} lanes, "
          f"{len(config.sinks)} sinks, {len(config.alerts)} alert rules)")
    if show_plan:
        print(plan.describe())
    return 0


def _streams_for(path: str, config, duration: float | None) -> None:
    """ConfigError for a run of `duration` s with no streams (outside a fleet): it would end at once."""
    if duration is not None and not config.streams and config.runtime.cluster is None:
        raise ConfigError(f"{path}: no streams to run for {duration:g} s; add some under `streams:`, or run "
                          "without a duration to start a service that takes cameras through its API")


def _preflight(path: str, config, plan) -> None:
    """ConfigError (file, line and key path of each problem) unless `config` can start on this machine."""
    from pipeline.config.loader import located
    from pipeline.runtime import preflight

    problems = preflight.check(config, plan.detector.engine)
    if problems:
        raise located(path, problems)


def _build_engine(path: str) -> int:
    from pipeline.config import load_config
    from pipeline.runtime.calibration import build_engine_for_config

    config = load_config(path)
    print(build_engine_for_config(config))
    return 0


def _seconds(text: str) -> float:
    """--duration: a finite number of seconds above 0 and within runtime.duration_s's bound."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is no duration: give seconds above 0 (a year at most), or leave "
                                         "--duration out to run until stopped")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 (any free port) to 65535")
    return int(text)


def _placement(args):
    """This instance's shard, port and outbox (`pipeline.runtime.placement`) from `run`'s options; ConfigError for
    a bad --shard, before anything loads."""
    from pipeline.runtime.placement import Placement, parse_shard

    if args.instance is not None and not 1 <= len(args.instance) <= 128:
        raise ConfigError(f"--instance {args.instance!r}: give a name of 1 to 128 characters")
    return Placement(None if args.shard is None else parse_shard(args.shard), args.port,
                     None if args.outbox is None else Path(args.outbox), args.instance)


def _run(path: str, duration: float | None, quiet: bool, placement=None) -> int:
    """With a duration (--duration or runtime.duration_s): a run that ends then, or when its files end.
    Without: a service that runs until stopped, with its HTTP server on runtime.http (default port 9108).
    placement: this instance's shard, port and outbox in a fleet (`pipeline.runtime.placement`)."""
    from pipeline.config.loader import config_text, parse_config
    from pipeline.config.models import HttpConfig
    from pipeline.config.resolve import resolve
    from pipeline.runtime.memory import tune_allocator
    from pipeline.runtime.progress import progress_reporter, summary
    from pipeline.runtime.progress_log import log_summary
    from pipeline.runtime.runner import PipelineRunner
    from pipeline.runtime.placement import Placement
    from pipeline.service.control import Control

    placement = placement or Placement()
    tune_allocator()  # before the pipeline's threads allocate anything

    with logs.held():  # lines logged while reading the config come out in the format it names
        applied = config_text(path)  # what runs: an edit while it starts is found at the first API change
        config = parse_config(applied, path)
        logs.configure(config.runtime.log_level, config.runtime.log_format)
    duration = duration if duration is not None else config.runtime.duration_s
    _streams_for(path, config, duration)
    cluster = config.runtime.cluster
    everyone = len(config.streams)
    config = placement.apply(config)  # planned and checked for this instance's own streams only
    if placement.shard is not None:
        log.info("instance %s runs shard %s: %d of the config's %d streams", config.runtime.instance,
                 placement.shard, len(config.streams), everyone)
    http = config.runtime.http or (HttpConfig() if duration is None else None)
    plan = resolve(config)
    _preflight(path, config, plan)
    coordinator = fleet = fleet_analytics = None
    if cluster is not None:
        from pipeline.cluster.analytics import FleetAnalytics
        from pipeline.cluster.cameras import FleetCameras
        from pipeline.cluster.coordinator import Coordinator
        from pipeline.cluster.store import FleetStore

        lanes = {lane.name for lane in config.lanes}
        coordinator = Coordinator(cluster, config.runtime.instance, lanes)
        fleet = FleetCameras(FleetStore(cluster.dsn, idle_limit_s=cluster.lease_s), lanes)
        fleet_analytics = FleetAnalytics(FleetStore(cluster.dsn, idle_limit_s=cluster.lease_s))
    runner = PipelineRunner(config, plan=plan, placement=placement, fence=coordinator and coordinator.fence)
    control = Control(runner, path, fleet=fleet, fleet_analytics=fleet_analytics, applied=applied)
    if http is not None:
        from pipeline.service import Service  # noqa: PLC0415 - the web stack loads only when served

        job = Service(runner, http, control, cluster=coordinator)
    else:
        job = runner
    if coordinator is not None:
        coordinator.attach(control.set_streams, runner.running, control.set_analytics, runner.detector_batches)
        coordinator.start()

    def on_signal(signum, _frame):
        log.warning("%s received: stopping sources and draining (again to abandon buffered frames)",
                    signal.Signals(signum).name)
        job.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: control.reload_in_background())
    # a child of `run --gpus` starts with SIGHUP blocked (`pipeline.service.supervisor`): one sent while it
    # started is delivered now, and reloads once the pipeline runs
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        with progress_reporter(config.runtime) as (on_progress, interval):
            snap = job.run(duration, on_progress=None if quiet else on_progress, progress_interval_s=interval)
    finally:
        if coordinator is not None:
            coordinator.close()
            fleet.close()
            fleet_analytics.close()
    print(summary(snap))
    code = exit_code(snap)
    if config.runtime.log_format == "json":
        log_summary(snap, code)
    return code


EXIT_SOME_FAILED, EXIT_ALL_FAILED, EXIT_DETECTOR_FAILED = 3, 4, 5


def exit_code(snap) -> int:
    """0 every stream ended as expected (or was stopped), 3 some failed, 4 every one failed, 5 the streams did
    but the detector failed every batch it was given (nothing was detected)."""
    failed = [s for s in snap.streams.values() if s.get("state") == "failed"]
    if failed and len(failed) == len(snap.streams):
        return EXIT_ALL_FAILED
    if failed:
        return EXIT_SOME_FAILED
    return EXIT_DETECTOR_FAILED if snap.extra.get("failed_batches") and not snap.batches else 0
