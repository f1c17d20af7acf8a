"""Peers on the same cameras: how many paced cameras each system keeps up with, and at what latency.

    python benchmarks/peers.py --peer typical --model yolo11n.torchscript --clip FOOTAGE.mp4 --out DIR
    python benchmarks/peers.py --peer ultralytics_stream --model yolo11n.pt --clip FOOTAGE.mp4 --out DIR
    python benchmarks/peers.py --peer supervision_loop --model yolo11n.pt --clip FOOTAGE.mp4 --out DIR

The clip is re-encoded at --size/--fps (pipeline.bench.clips, as `run_pipeline.py bench` does) and served
by the paced feeder (pipeline.bench.feeder): every camera is a live MPEG-TS stream over HTTP on loopback
whose timestamps are its send times. For each camera count the peer runs in its own process
(benchmarks/peers/<peer>.py) and records, per camera, the latency of every frame captured in the window
(capture = the feeder's send time; done = its detections are on the host). A count **holds** when every
camera had all of its frames in the window processed and the p99 latency is within --bound-ms; counts
are searched as `bench` does (grow, or shrink from a start that fails, then bisect). Models:
benchmarks/peers/make_models.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.bench.clips import camera_clip  # noqa: E402
from pipeline.bench.feeder import PacedFeeder  # noqa: E402
from pipeline.bench.ramp import count_text, growth_factor, only_a_floor, search  # noqa: E402


@dataclass
class PeerStep:
    cameras: int
    holds: bool
    reasons: list[str]
    fps: float
    frames: int
    cameras_short: int
    p50: float | None
    p95: float | None
    p99: float | None


class PeerRamp:
    """The `search` interface (set_cameras, measure) over one peer process per camera count."""

    def __init__(self, args, feeder: PacedFeeder):
        self.args, self.feeder, self.count, self.runs = args, feeder, 0, 0

    def set_cameras(self, count: int) -> None:
        self.count = count

    def measure(self, window_s: float) -> PeerStep:
        args = self.args
        self.runs += 1
        urls = [self.feeder.url(f"run{self.runs}-cam{i}") for i in range(self.count)]
        start = time.time_ns() + round(args.warmup_s * 1e9)
        out = args.out / f"{args.peer}-{self.count}.json"
        command = [sys.executable, str(REPO / "benchmarks" / "peers" / f"{args.peer}.py"), "--model", str(args.model),
                   "--urls", *urls, "--epoch-ns", str(self.feeder.epoch_ns), "--window", str(start),
                   str(start + round(window_s * 1e9)), "--imgsz", str(args.imgsz), "--conf", str(args.conf),
                   "--device", args.device, "--batch", str(args.batch), "--out", str(out)]
        subprocess.run(command, check=True, timeout=args.warmup_s + window_s + 120)
        latency = json.loads(out.read_text())["latency_ms"]
        expected = window_s * args.fps
        short = sum(len(frames) < expected - 1 for frames in latency)
        every = np.concatenate([np.asarray(frames, float) for frames in latency]) if latency else np.zeros(0)
        p50, p95, p99 = (round(float(np.percentile(every, q)), 1) if every.size else None for q in (50, 95, 99))
        reasons = [f"{short} cameras had frames unprocessed"] if short else []
        if p99 is None or p99 > args.bound_ms:
            reasons.append(f"p99 {p99} ms > {args.bound_ms:g} ms")
        step = PeerStep(self.count, not reasons, reasons, round(every.size / window_s, 1), int(every.size), short,
                        p50, p95, p99)
        print(f"{args.peer} {self.count} cameras: {'holds' if step.holds else '; '.join(reasons)} "
              f"({step.fps:.0f} frames/s, p50/p95/p99 {p50}/{p95}/{p99} ms)", flush=True)
        return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=["typical", "ultralytics_stream", "supervision_loop"], required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=32, help="largest batch (typical script)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--start", type=int, default=8)
    parser.add_argument("--max", type=int, default=256)
    parser.add_argument("--growth", type=growth_factor, default=1.5)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="model load, connections and the model's first runs at each batch shape before the window")
    parser.add_argument("--bound-ms", type=float, default=150.0, help="p99 latency bound (the default lane's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    clip = camera_clip(args.clip, args.out / "clips", width, height, args.fps, args.clip_seconds)
    feeder = PacedFeeder(clip).start()
    try:
        best, steps = search(PeerRamp(args, feeder), args.start, args.max, args.window_s, args.growth)
    finally:
        feeder.close()
    floor = only_a_floor(best, steps)
    report = {"peer": args.peer, "cameras_in_real_time": best, "only_a_floor": floor,
              "steps": [asdict(s) for s in steps],
              "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    (args.out / f"{args.peer}.json").write_text(json.dumps(report, indent=1))
    print(f"{args.peer}: real-time cameras: {count_text(best, floor)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
