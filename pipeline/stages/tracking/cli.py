"""`run_pipeline.py track`: run the tracker on a MOTChallenge det.txt and write results researchers can score.

    run_pipeline.py track --det MOT17-02/det/det.txt --out results/MOT17-02.txt \
        [--seqinfo MOT17-02/seqinfo.ini] [--interpolate 20] [--include-coasted] [--set high_threshold=0.5 ...]

As the pipeline's MOT export: tracks matched to a detection on the frame are written; the predicted boxes
of coasting tracks (score 0) only with --include-coasted, as MOT tools count a box where no object was
seen as a false positive when the object really left.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from pipeline import mot
from pipeline.config.fields import key_path
from pipeline.config.loader import problems_of
from pipeline.config.models import TrackerConfig
from pipeline.errors import ConfigError, PipelineError
from pipeline.stages.tracking.bytetrack import ByteTracker


def track_table(table: np.ndarray, config: TrackerConfig, length: int | None = None,
                include_coasted: bool = False) -> tuple[np.ndarray, float]:
    """Track a whole sequence of MOT detection rows.

    table: (N, >=7) rows frame, id, x, y, w, h, score. Returns the (M, 7) result rows
    (frame, track id, x, y, w, h, score) and the seconds spent inside the tracker. Rows are the tracks
    matched on each frame, plus the coasting tracks' predicted boxes (score 0) with `include_coasted`.
    """
    tracker = ByteTracker(config)
    parts = []
    spent = 0.0
    for frame, dets in mot.frames_of(table, length):
        start = time.perf_counter()
        tracked = tracker.update(dets)
        spent += time.perf_counter() - start
        if not include_coasted:
            tracked = tracked[np.isin(tracked.track_id, tracker.matched_ids)]
        xyxy = tracked.xyxy.astype(np.float64)
        parts.append(np.column_stack([
            np.full(len(tracked), frame), tracked.track_id, xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], tracked.score,
        ]))
    return (np.concatenate(parts) if parts else np.zeros((0, 7))), spent


NOT_HERE = {  # settings `track` cannot apply: refused, not ignored
    "camera_motion": "`track` has detections, not pictures, to estimate the camera's motion from "
                     "(follow_shared_motion, on by default, moves lost tracks with the shift the matched ones share)",
    "enabled": "`track` always tracks",
}


def parse_overrides(pairs: list[str]) -> TrackerConfig:
    """TrackerConfig from `key=value` strings; raises ConfigError naming the bad key, or one `track` cannot apply
    (`NOT_HERE`) set to anything but its default."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set high_threshold=0.5")
        values[key.strip()] = value.strip()
    try:
        config = TrackerConfig(**values)
    except ValidationError as exc:
        # a check across settings names the key it blames, as in the YAML
        problem = problems_of(exc, values, TrackerConfig)[0]
        raise ConfigError(f"--set: {key_path(problem.loc)}: {problem.message}; "
                          f"keys: {sorted(TrackerConfig.model_fields)}") from exc
    for key, why in NOT_HERE.items():
        if getattr(config, key) != TrackerConfig.model_fields[key].default:
            raise ConfigError(f"--set {key}: {why}")
    return config


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--det", type=Path, required=True, help="MOTChallenge det.txt (frame,-1,x,y,w,h,score,...)")
    parser.add_argument("--out", type=Path, required=True, help="result file to write (MOTChallenge format)")
    parser.add_argument("--seqinfo", type=Path, help="seqinfo.ini; gives the sequence length (default: last frame with a detection)")
    parser.add_argument("--interpolate", type=int, default=0, metavar="FRAMES",
                        help="offline: fill track gaps up to this many frames by linear interpolation (0 = online output)")
    parser.add_argument("--include-coasted", action="store_true",
                        help="also write coasting tracks' predicted boxes (score 0; up to tracker coast_frames frames)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="tracker setting, as in the YAML `tracker:` section; repeatable")
    return parser


def track_command(argv: list[str], prog: str = "run_pipeline.py track") -> int:
    """Entry point of the `track` subcommand (`prog`: the command as run); returns the process exit code (0 ok,
    2 bad input)."""
    args = _parser(prog).parse_args(argv)
    try:
        config = parse_overrides(args.overrides)
        length = mot.read_seqinfo(args.seqinfo).length if args.seqinfo else None
        table = mot.read_mot(args.det)
        result, spent = track_table(table, config, length, args.include_coasted)
        result = mot.interpolate_gaps(result, args.interpolate)
        mot.write_mot(args.out, mot.format_table(result))
    except PipelineError as exc:
        print(f"track: {exc}", file=sys.stderr)
        return 2
    frames = int(max(table[:, 0].max() if len(table) else 0, length or 0))
    ids = len(np.unique(result[:, 1])) if len(result) else 0
    print(f"tracked {frames} frames, {ids} tracks, {frames / max(spent, 1e-9):.0f} frames/s -> {args.out}")
    return 0
