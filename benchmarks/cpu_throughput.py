"""The pipeline's CPU throughput on N file streams vs ONNX Runtime's bare throughput, same model, same run.

    .venv/bin/python benchmarks/cpu_throughput.py [--streams 8] [--batch 8] [--seconds 20]

Bare: the engine alone on one preprocessed batch, repeated (the ceiling). Pipeline: `run` on N
streams of real clips (decode, buffer, letterbox, engine, NMS, SQLite) for the same wall time.
Prints both and their ratio (target >= 0.95; docs/BENCHMARKS.md says why two cores cannot reach it).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.models import PipelineConfig  # noqa: E402
from pipeline.config.resolve import detector_plan  # noqa: E402
from pipeline.detect.engines import build_engine  # noqa: E402
from pipeline.machine import cpu_cores  # noqa: E402
from pipeline.runtime.runner import PipelineRunner  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = ["car-detection.mp4", "person-bicycle-car-detection.mp4", "one-by-one-person-detection.mp4"]


def bare_engine_fps(config: PipelineConfig, batch: int, seconds: float, workers: int) -> float:
    """The engine alone: `workers` threads each running one preprocessed batch over and over."""
    detector_config = config.detector.model_copy(update={"workers": workers})
    engine = build_engine(detector_config, detector_plan(detector_config, batch))
    inputs = {"images": np.random.default_rng(0).uniform(0, 255, (batch, 3, 416, 416)).astype(np.float32)}
    counts = [0] * workers
    engine.infer(inputs)
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            engine.infer(inputs)
            counts[i] += batch

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    return sum(counts) / (time.perf_counter() - t0)


def pipeline_fps(config: PipelineConfig, seconds: float, warmup_s: float = 3.0) -> tuple[float, dict]:
    """Steady-state frames/s of `run`: frames detected between `warmup_s` and the stop request
    (start-up, like the bare engine's warm-up run, and the final drain are left out)."""
    samples = []
    runner = PipelineRunner(config)
    snap = runner.run(duration_s=seconds, on_progress=lambda s: samples.append((s.elapsed_s, s.frames_detected)),
                      progress_interval_s=0.5)
    window = [(t, n) for t, n in samples if warmup_s <= t <= seconds]
    (t0, n0), (t1, n1) = window[0], window[-1]
    return (n1 - n0) / (t1 - t0), {"frames": snap.frames_detected, "elapsed_s": round(snap.elapsed_s, 1),
                                   "batches": snap.batches, "mean_batch": round(snap.frames_detected / max(1, snap.batches), 2),
                                   "dropped": sum(st.get("dropped_overflow", 0) for st in snap.streams.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="pipeline seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
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
    # The ceiling is the better of ONNX Runtime's usual set-up (one run on every core) and the
    # pipeline's (the plan's workers, one share of the cores each), both measured here on the same input. The
    # machine is noisy, so bare and pipeline are measured in alternation and the medians compared.
    workers = detector_plan(config.detector).workers
    one_run = config.model_copy(update={"detector": config.detector.model_copy(update={"workers": 1})})
    rounds = {"bare_all_cores": [], "bare_parallel": [], "pipeline": []}
    for _ in range(args.rounds):
        rounds["bare_all_cores"].append(bare_engine_fps(one_run, args.batch, args.seconds / 3, workers=1))
        rounds["bare_parallel"].append(bare_engine_fps(config, args.batch, args.seconds / 3, workers=workers))
        piped, info = pipeline_fps(config, args.seconds)
        rounds["pipeline"].append(piped)
    median = {k: float(np.median(v)) for k, v in rounds.items()}
    bare = max(median["bare_all_cores"], median["bare_parallel"])
    result = {"streams": args.streams, "batch": args.batch, "cores": cpu_cores(), "rounds": args.rounds,
              **{f"{k}_img_s": [round(x, 1) for x in v] for k, v in rounds.items()},
              "ratio_of_medians": round(median["pipeline"] / bare, 3), "last_round": info}
    print(json.dumps(result))
    print(f"bare ONNX Runtime (median of {args.rounds}): {median['bare_all_cores']:.1f} img/s (one run, all cores), "
          f"{median['bare_parallel']:.1f} img/s ({workers} runs in parallel) | pipeline on {args.streams} streams: "
          f"{median['pipeline']:.1f} frames/s | ratio {median['pipeline'] / bare:.2f} of the best bare (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
