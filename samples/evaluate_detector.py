"""mAP of an Ultralytics-layout ONNX detector on synthetic worlds it was not trained on.

    .venv/bin/python -m samples.evaluate_detector samples/models/world_detector.onnx
    .venv/bin/python -m samples.evaluate_detector samples/models/world_detector.onnx --tracking configs/demo.yaml

Renders `--frames` frames per held-out seed (seeds 900-905, two of each scene, 640x360), runs the
model through ONNX Runtime on the CPU, and prints COCO-style mAP@0.5 and mAP@0.5:0.95 (101-point),
per class, with class-aware NMS at IoU 0.45. Ground truth under 35 % visible or under 6 model
pixels tall is "ignore" (neither required nor penalised).

With `--tracking CONFIG` it instead scores what the model does for a job: every frame of the first
`--seconds` of each synthetic stream in CONFIG goes through the pipeline's Detector (CONFIG's
threshold) and ByteTracker (CONFIG's settings), and it prints detection precision/recall, IDF1 and
line-count accuracy per stream (samples.world.scoring). No frame is dropped, unlike a live run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.detect.detector import Detector
from pipeline.stages.tracking.bytetrack import ByteTracker
from samples.world import CLASS_NAMES, World
from samples.world.metrics import mean_average_precision
from samples.world.modeling import evaluate_onnx
from samples.world.scoring import score_stream
from samples.world.url import parse_synthetic_url

SCENES = ("plaza", "street", "junction")
HELDOUT_SEEDS = tuple(range(900, 906))


def held_out_frames(frames_per_seed: int, size=(640, 360)):
    """Frames spread over ten minutes of each held-out world: list of (image, ground truth)."""
    out = []
    for seed in HELDOUT_SEEDS:
        world = World(SCENES[seed % len(SCENES)], seed, size, 15)
        step = 15 * 600 // frames_per_seed
        out.extend(world.render(i) for i in range(7, 15 * 600, step)[:frames_per_seed])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samples.evaluate_detector", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--frames", type=int, default=100, help="frames per held-out seed")
    p.add_argument("--tracking", type=Path, metavar="CONFIG", help="score detection + tracking on CONFIG's streams")
    p.add_argument("--seconds", type=float, default=30, help="with --tracking: seconds of each stream")
    args = p.parse_args(argv)
    if args.tracking:
        print(json.dumps(tracking_accuracy(args.model, args.tracking, args.seconds), indent=1))
        return 0
    frames = held_out_frames(args.frames)
    start = time.perf_counter()
    result = mean_average_precision(evaluate_onnx(args.model, frames), len(CLASS_NAMES))
    result["per_class"] = {CLASS_NAMES[c]: v for c, v in result["per_class"].items()}
    result["images"] = len(frames)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))
    return 0


def tracking_accuracy(model: Path, config_path: Path, seconds: float) -> dict:
    """Per synthetic stream of the config and their mean: precision, recall, IDF1, line-count accuracy."""
    config = load_config(config_path)
    detector = Detector(config.detector.model_copy(update={"model": model, "engine": "onnxruntime"}), max_batch=8)
    per_stream = {}
    try:
        for stream in config.streams:
            if not stream.url.startswith("synthetic://"):
                continue
            spec = parse_synthetic_url(stream.url)
            world = World(spec.scene, spec.seed, spec.size, spec.fps)
            tracker, rows, n = ByteTracker(config.tracker), [], int(seconds * spec.fps)
            for start in range(0, n, 8):
                batch = range(start, min(start + 8, n))
                found = detector.detect_images([world.render(f)[0] for f in batch])[0].to_host()
                for i, f in enumerate(batch):
                    out = tracker.update(found.for_frame(i))
                    pts_ns = round(f * 1e9 / spec.fps)
                    rows += [(pts_ns, out.xyxy[k], int(out.class_id[k]), float(out.score[k]), int(out.track_id[k]))
                             for k in range(len(out.score)) if out.score[k] > 0]  # coasted boxes carry score 0
            score = score_stream(stream.url, rows, frames=range(n))
            per_stream[stream.id] = {"precision": score["detection"]["precision"], "recall": score["detection"]["recall"],
                                     "idf1": score.get("idf1", 0.0), "lines": score.get("line_count_accuracy", 1.0)}
    finally:
        detector.close()
    keys = ("precision", "recall", "idf1", "lines")
    mean = {k: round(float(np.mean([s[k] for s in per_stream.values()])), 3) for k in keys}
    return {"mean": mean, "per_stream": {i: {k: round(s[k], 3) for k in keys} for i, s in per_stream.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
