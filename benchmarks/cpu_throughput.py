"""The pipeline's CPU throughput on N file streams vs ONNX Runtime's bare throughput, same model, same run.

    .venv/bin/python benchmarks/cpu_throughput.py [--streams 8] [--batch 8] [--seconds 20]

Bare: the engine alone on one preprocessed batch, repeated (the ceiling). Pipeline: `run` on N
streams of real clips (decode, buffer, letterbox, engine, NMS, SQLite) for the same wall time.
Prints both and their ratio (target >= 0.9).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.models import PipelineConfig  # noqa: E402
from pipeline.detect.engines import create_engine  # noqa: E402
from pipeline.runtime.runner import PipelineRunner  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = ["car-detection.mp4", "person-bicycle-car-detection.mp4", "one-by-one-person-detection.mp4"]


def bare_engine_fps(config: PipelineConfig, batch: int, seconds: float) -> float:
    engine, _ = create_engine(config.detector, batch)
    w, h = 416, 416
    inputs = {"images": np.random.default_rng(0).uniform(0, 255, (batch, 3, h, w)).astype(np.float32)}
    engine.infer(inputs)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.infer(inputs)
        n += batch
    engine.close()
    return n / (time.perf_counter() - t0)


def pipeline_fps(config: PipelineConfig, seconds: float) -> tuple[float, dict]:
    runner = PipelineRunner(config)
    snap = runner.run(duration_s=seconds)
    return snap.frames_detected / snap.elapsed_s, {"frames": snap.frames_detected, "elapsed_s": snap.elapsed_s,
                                                   "batches": snap.batches, "mean_batch": snap.frames_detected / max(1, snap.batches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default=str(SHARED / "models/yolox_nano_416_dynbatch.onnx"))
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-"))
    streams = [{"id": f"cam-{i}", "url": str(SHARED / "media" / CLIPS[i % len(CLIPS)]), "loop": True}
               for i in range(args.streams)]
    config = PipelineConfig.model_validate({
        "streams": streams,
        "lanes": [{"name": "default", "max_batch": args.batch, "max_wait_ms": 50}],
        "detector": {"model": args.model, "engine": "onnxruntime"},
        "tracker": {"enabled": False},
        "sinks": [{"type": "sqlite", "path": str(out / "bench.db")}],
        "runtime": {"outbox_path": str(out / "outbox.db")},
    })
    bare = bare_engine_fps(config, args.batch, args.seconds / 2)
    piped, info = pipeline_fps(config, args.seconds)
    result = {"streams": args.streams, "batch": args.batch, "bare_engine_img_s": round(bare, 1),
              "pipeline_frames_s": round(piped, 1), "ratio": round(piped / bare, 3), **info}
    print(json.dumps(result))
    print(f"bare ONNX Runtime: {bare:.1f} img/s | pipeline on {args.streams} streams: {piped:.1f} frames/s "
          f"| ratio {piped / bare:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
