"""`run_pipeline.py bench`: ceilings, then the real-time ramp, into a JSON report, a Markdown table and a plot.

    run_pipeline.py bench --model M.onnx --clip C.mp4 [--size 1920x1080] [--fps 30] [--out DIR]
    run_pipeline.py bench CONFIG.yaml --clip C.mp4 ...     # that config's detector, lanes, tracker, runtime

Cameras are the clip re-encoded at --size/--fps and played paced and looped (`pace: true`), or --url (a
live source, read as it is). Every tenth camera (--priority-share) is in lane `priority`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from pipeline import logs
from pipeline.bench.ceilings import decode_ceiling, engine_ceiling
from pipeline.bench.clips import camera_clip
from pipeline.bench.decode_table import decode_table
from pipeline.bench.decode_table import markdown as decode_markdown
from pipeline.bench.measure import GpuSampler
from pipeline.bench.ramp import (PRIORITY_LANE, LiveRamp, bulk_lane, camera_factory, count_text, growth_factor,
                                 only_a_floor, search)
from pipeline.bench.report import to_json, write_report
from pipeline.config.loader import load_config
from pipeline.config.models import (DetectorConfig, LaneConfig, PipelineConfig, RuntimeConfig, StreamConfig,
                                    TrackerConfig)
from pipeline.config.resolve import resolve
from pipeline.detect.detector import Detector
from pipeline.errors import ConfigError, PipelineError
from pipeline.masking import mask_url
from pipeline.runtime.telemetry import LATENCY_BUCKETS_S

log = logging.getLogger("pipeline.bench")


def bench_command(argv: list[str], prog: str = "run_pipeline.py bench") -> int:
    """Entry point of the `bench` subcommand (`prog`: the command as run); returns the process exit status (2: bad
    arguments or config)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.start > args.max:
        parser.error(f"--start {args.start} is above --max {args.max}")
    logs.configure()
    try:
        return _bench(args, argv)
    except PipelineError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def _bench(args, argv: list[str]) -> int:
    base = _base_config(args)
    out = args.out or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    if args.decode_table:  # no cameras and no lanes: the decode stage alone
        out.mkdir(parents=True, exist_ok=True)
        return _decode_table(args, base, out)
    cameras = _cameras(args, base)
    sample = cameras(0)

    def plan_for(count: int):  # the plan as for `count` cameras
        return resolve(base.model_copy(update={"streams": [cameras(i) for i in range(count)]}))

    plan = plan_for(args.max)
    if base.runtime.decode_processes == "auto" and plan.per_child:  # the ramp adds its cameras one at a time:
        # every one in a decode process from the first, as a config that starts with them all has them
        children = min(math.ceil(sum(s.in_child for s in plan.streams) / plan.per_child), plan.decode_processes)
        base = base.model_copy(update={"runtime": base.runtime.model_copy(update={"decode_processes": children})})
    out.mkdir(parents=True, exist_ok=True)
    camera = sample.model_dump(mode="json", exclude_defaults=True)  # the report is shared: no camera's password
    camera["url"] = mask_url(camera["url"])
    report: dict = {"command": mask_url("run_pipeline.py bench " + " ".join(argv)),
                    "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": plan.machine.describe(),
                    "engine": plan.detector.reason, "camera": camera,
                    "bounds_ms": {k: v * 1000 for k, v in args.bounds.items()},
                    "camera_fps": None if args.url else args.fps}
    detector, gpu = Detector(base.detector, plan=plan.detector), None
    try:  # until the ramp's pipeline has the detector: it closes it when it ends
        report["engine_alone"] = engine_ceiling(detector, args.batches, args.ceiling_seconds)
        if args.decode_streams and not sample.is_live:
            report["decode_alone"] = decode_ceiling(base, plan_for(args.decode_streams), sample.url,
                                                    args.decode_streams, args.ceiling_seconds)
            log.info("decode alone, %d streams: %.0f frames/s", report["decode_alone"]["streams"],
                     report["decode_alone"]["fps"])
        report["ramp"], report["complete"] = [], False
        _save(report, out)
        gpu = GpuSampler(plan.detector.device).start() if plan.machine.gpu else None
        ramp = LiveRamp(base, cameras, args.bounds, settle_s=args.settle_s, gpu=gpu, detector=detector)
    except BaseException:  # a ceiling that failed, Ctrl-C: the engine's memory and threads go now
        detector.close()
        if gpu is not None:
            gpu.close()
        raise

    def keep(step) -> None:  # each window as it ends: a run stopped early (Ctrl-C, a time limit) keeps them
        report["ramp"].append(step.as_dict())
        _save(report, out)

    try:
        ramp.start()
        best, steps = search(ramp, args.start, args.max, args.window_s, args.growth, on_step=keep)
        report["cameras_in_real_time"] = best
        report["only_a_floor"] = only_a_floor(best, steps)
        if best:
            ramp.set_cameras(max(1, math.floor(0.9 * best)))
            report["at_90_percent"] = ramp.measure(args.window_s).as_dict()
    finally:
        ramp.close()
        if gpu is not None:
            gpu.close()
    report["complete"] = True
    _save(report, out)
    write_report(report, out)
    print(f"real-time cameras: {count_text(best, report['only_a_floor'])}; report in {out}/bench.json, bench.md, "
          "bench.png")
    return 0


def _save(report: dict, out: Path) -> None:
    """bench.json as measured so far (`complete` once the run has ended), replaced whole: a run killed while
    writing keeps the previous one."""
    partial = out / "bench.json.part"
    partial.write_text(to_json(report))
    os.replace(partial, out / "bench.json")


def _decode_table(args, base: PipelineConfig, out: Path) -> int:
    if args.clip is None:
        raise ConfigError("--decode-table re-encodes a clip: give --clip FILE")
    rows = decode_table(base, args.clip, out / "clips", args.size, args.fps, args.decode_streams,
                        args.ceiling_seconds, args.clip_seconds)
    (out / "decode_table.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(decode_markdown(rows, args.decode_streams, args.fps))
    (out / "decode_table.md").write_text(text + "\n")
    print(text)
    return 0


def _parser(prog: str = "run_pipeline.py bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", type=Path, help="a pipeline config: its detector, lanes, tracker and "
                        "runtime are used, its streams are not")
    parser.add_argument("--model", type=Path, help="the model (without a config)")
    parser.add_argument("--engine", default="auto", help="the detector's engine (without a config)")
    parser.add_argument("--max-batch", type=_COUNT, default=32, help="each lane's max_batch (without a config)")
    parser.add_argument("--clip", type=Path, help="the footage every camera plays (re-encoded at --size and --fps)")
    parser.add_argument("--url", help="a live source every camera reads instead of a clip")
    parser.add_argument("--size", type=_size, default="1920x1080", help="camera resolution WxH (even numbers)")
    parser.add_argument("--fps", type=_POSITIVE, default=30.0, help="camera frame rate")
    parser.add_argument("--clip-seconds", type=_POSITIVE, default=20.0, help="length of the re-encoded clip (it loops)")
    parser.add_argument("--start", type=_COUNT, default=8, help="cameras in the first step")
    parser.add_argument("--max", type=_COUNT, default=512, help="never more cameras than this")
    parser.add_argument("--growth", type=growth_factor, default=1.5, help="each step's cameras over the last, until one fails")
    parser.add_argument("--window-s", type=_POSITIVE, default=60.0, help="seconds a count must hold")
    parser.add_argument("--settle-s", type=_NON_NEGATIVE, default=3.0, help="seconds after new cameras start before a window")
    parser.add_argument("--priority-share", type=_SHARE, default=0.1, help="share of cameras in lane 'priority'")
    parser.add_argument("--bound", action="append", default=[], metavar="LANE=MS",
                        help="a lane's p99 latency bound in ms (default 50 for lane priority, 150 for the other; "
                        "a histogram bucket bound: 5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000 ...)")
    parser.add_argument("--decode-streams", type=_STREAMS, default=32, help="streams for the decode ceiling (0: skip)")
    parser.add_argument("--batches", type=_COUNT, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128],
                        help="batch sizes for the engine ceiling (those within max_batch)")
    parser.add_argument("--ceiling-seconds", type=_POSITIVE, default=10.0, help="seconds per ceiling measurement")
    parser.add_argument("--decode-table", action="store_true",
                        help="instead of the ramp: the decode ceiling for the clip re-encoded at other resolutions, "
                        "GOP lengths, B-frames and bitrates")
    parser.add_argument("--out", type=Path, help="where the report goes (default runs/bench-<time>)")
    return parser


def _base_config(args) -> PipelineConfig:
    if args.config is not None:
        config = load_config(args.config)
        return config.model_copy(update={"streams": [], "sinks": []})
    if args.model is None:
        raise ConfigError("bench needs a model: --model FILE.onnx, or a config file")
    try:
        return PipelineConfig(
            streams=[],
            lanes=[LaneConfig(name=PRIORITY_LANE, priority=10, max_batch=args.max_batch, max_wait_ms=5),
                   LaneConfig(name="default", max_batch=args.max_batch, max_wait_ms=20, max_age_ms=2000)],
            detector=DetectorConfig(model=args.model, engine=args.engine),
            tracker=TrackerConfig(enabled=False),
            runtime=RuntimeConfig(),
        )
    except ValidationError as exc:  # --model, --engine or --max-batch: the only values taken from the command line
        field = exc.errors()[0]["loc"][0]
        raise ConfigError(f"--{field.replace('_', '-')} {str(getattr(args, field))!r}: {_said(exc)}") from None


def _said(exc: ValidationError) -> str:
    """What the first problem pydantic found says: a validator's own message as it wrote it."""
    problem = exc.errors()[0]
    return str(problem.get("ctx", {}).get("error") or problem["msg"])


def _checked(convert: Callable[[str], float], test: Callable[[float], bool], says: str) -> Callable[[str], float]:
    """An argparse type: `convert(text)`, finite and passing `test`, else an error saying `says` (exit 2, naming
    the option)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text}: not a number") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"{text}: {says}")
        return value

    return parse


_COUNT = _checked(int, lambda v: v >= 1, "a whole number of at least 1")
_STREAMS = _checked(int, lambda v: v >= 0, "a whole number, 0 or more")
_POSITIVE = _checked(float, lambda v: v > 0, "a number above 0")
_NON_NEGATIVE = _checked(float, lambda v: v >= 0, "a number, 0 or more")
_SHARE = _checked(float, lambda v: 0 <= v <= 1, "a share from 0 to 1")


def _size(text: str) -> tuple[int, int]:
    """An argparse type for --size: WIDTHxHEIGHT, even numbers above 0 (H.264 in 4:2:0 takes no other)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: write WIDTHxHEIGHT, e.g. 1920x1080") from None
    if min(width, height) <= 0 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be even numbers above 0")
    return width, height


def _bounds(args, lanes: tuple[str, str]) -> dict[str, float]:
    """Per lane the cameras are in (`priority`, the other): its p99 bound in seconds, --bound LANE=MS, else 50 ms
    for the priority lane and 150 ms for the other, whatever its name. A bound is a bucket bound of the latency
    histogram, so that "p99 within it" is read exactly."""
    bounds = {lanes[0]: 0.05, lanes[1]: 0.15}
    for item in args.bound:
        lane, _, ms = item.partition("=")
        try:
            seconds = float(ms) / 1000
        except ValueError:
            raise ConfigError(f"--bound {item!r}: write LANE=MS, e.g. --bound priority=50") from None
        if lane not in bounds:
            raise ConfigError(f"--bound {item!r}: no camera is in lane '{lane}' (they are in '{lanes[0]}' and "
                              f"'{lanes[1]}')")
        bucket = next((b for b in LATENCY_BUCKETS_S if math.isclose(b, seconds, rel_tol=1e-9)), None)
        if bucket is None:
            raise ConfigError(f"--bound {item!r}: {ms} ms is not a bucket bound of the latency histogram; use one of "
                              + ", ".join(f"{b * 1000:g}" for b in LATENCY_BUCKETS_S))
        bounds[lane] = bucket
    return bounds


def _cameras(args, base: PipelineConfig):
    names = [lane.name for lane in base.lanes]
    other = bulk_lane(names)
    if PRIORITY_LANE not in names:
        raise ConfigError(f"{args.config}: the benchmark puts every camera but those in lane '{PRIORITY_LANE}' in "
                          f"'{other}' (the first lane not named '{PRIORITY_LANE}'); add a lane named '{PRIORITY_LANE}'")
    if other == PRIORITY_LANE:
        raise ConfigError(f"{args.config}: the benchmark puts every camera but those in lane '{PRIORITY_LANE}' in the "
                          f"first lane not named '{PRIORITY_LANE}'; add one")
    args.bounds = _bounds(args, (PRIORITY_LANE, other))
    if (args.clip is None) == (args.url is None):
        raise ConfigError("bench needs exactly one of --clip FILE (played paced and looped) or --url URL (live)")
    if args.url is not None:
        url = args.url
    else:
        if not args.clip.is_file():
            raise ConfigError(f"--clip {args.clip}: no such file")
        width, height = args.size
        folder = (args.out or Path("runs")) / "clips"
        url = str(camera_clip(args.clip, folder, width, height, args.fps, args.clip_seconds))
    try:  # a URL no source takes is refused here, before anything starts
        StreamConfig(id="probe", url=url)
    except ValidationError as exc:
        raise ConfigError(f"--url {mask_url(url)}: {_said(exc)}") from None
    every = round(1 / args.priority_share) if args.priority_share > 0 else 0
    return camera_factory(url, (PRIORITY_LANE, other), every)
