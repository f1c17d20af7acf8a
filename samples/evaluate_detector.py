"""mAP of an Ultralytics-layout ONNX detector on synthetic worlds it was not trained on.

    .venv/bin/python -m samples.evaluate_detector samples/models/world_detector.onnx

Renders `--frames` frames per held-out seed (seeds 900-905, two of each scene, 640x360), runs the
model through ONNX Runtime on the CPU, and prints COCO-style mAP@0.5 and mAP@0.5:0.95 (101-point),
per class, with class-aware NMS at IoU 0.45. Ground truth under 35 % visible or under 6 model
pixels tall is "ignore" (neither required nor penalised).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from samples.world import CLASS_NAMES, World
from samples.world.metrics import mean_average_precision
from samples.world.modeling import evaluate_onnx

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
    args = p.parse_args(argv)
    frames = held_out_frames(args.frames)
    start = time.perf_counter()
    result = mean_average_precision(evaluate_onnx(args.model, frames), len(CLASS_NAMES))
    result["per_class"] = {CLASS_NAMES[c]: v for c, v in result["per_class"].items()}
    result["images"] = len(frames)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
