"""Heavy models on the GPU: the torch engine's images/s per batch size, and the pipeline end to end at the same batch.

    python benchmarks/heavy_models.py --out OUT_DIR [--models M.onnx ...] [--e2e-streams 32]

Models: `scripts/export_gpu_models.py bench` writes YOLO11s and YOLO11m at 640 (dynamic ONNX, random weights
rounded to 4 values per tensor so they travel small; speed does not depend on the values) into
`.device/exports/`. Sections (`--only`):
- engine: images/s of the torch engine alone per batch size (1..64), FP16 with CUDA graphs, as is and with
  channels-last weights (`detector.channels_last`);
- load: what the detector sees on real 1080p frames at the benchmark's threshold: candidates per frame above
  `conf_threshold` before NMS, and the cap `max_candidates` puts on them;
- e2e: the real pipeline (`pipeline_bench.end_to_end`: NVDEC, batching, fused preprocess, engine, NMS) on
  N looped 1080p streams with 1 and 2 workers (`detector.workers`, --e2e-workers), the next batch queued or
  not (`detector.queue_next`, --e2e-queue-next), reported beside the engine alone at the lane's batch size.
Untrained weights score many anchors alike, which would make NMS the benchmark: the detector runs at
conf_threshold 0.25 with max_candidates 1000 per frame (--conf, --max-candidates), said in the output.
Writes OUT_DIR/heavy_models.json and .md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from gpu_bench import time_gpu
from gpu_profile import WindowProfile
from pipeline_bench import REPO, end_to_end, make_1080p_clip, run_sections

log = logging.getLogger("heavy_models")
EXPORTS = REPO / ".device" / "exports"
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def engine_rows(model: Path, batches=BATCHES) -> list[dict]:
    """Images/s of the torch engine alone (FP16, CUDA graphs), as is and channels-last, per batch size, on random
    input."""
    import cupy

    from pipeline.config.models import DetectorConfig
    from pipeline.detect.engines.torch_engine import TorchEngine

    rows = []
    for channels_last in (False, True):
        started = time.perf_counter()
        engine = TorchEngine(model, DetectorConfig(model=model, precision="fp16"), max_batch=max(batches),
                             channels_last=channels_last)
        ready_s = time.perf_counter() - started
        for batch in batches:
            buffer = engine.input_buffer(batch)
            with engine.stream:
                buffer[...] = cupy.random.uniform(0, 1, buffer.shape).astype(buffer.dtype)
            ms = time_gpu(lambda: engine.infer({"images": buffer}), 20, engine.stream)
            rows.append({"model": model.name, "channels_last": channels_last, "graphs": engine.graph_status,
                         "batch": batch, "ms": ms, "images_per_s": batch / ms * 1000, "ready_s": ready_s})
        engine.close()
    return rows


def load(model: Path, clip: Path, detector: dict, frames: int = 16) -> dict:
    """Candidates per frame above the threshold on real 1080p frames (before the max_candidates cap)."""
    import numpy as np

    from pipeline.config.models import DetectorConfig
    from pipeline.detect import heads, preprocess
    from pipeline.detect.detector import Detector
    from tests.gpu.helpers import decode_clip

    images = [d.image for d in decode_clip(clip, "cpu", limit=frames)]
    config = DetectorConfig(model=model, engine="torch", **detector)
    found = Detector(config, max_batch=frames)
    try:
        buffer = preprocess.allocate(len(images), found.spec)
        preprocess.preprocess_into(images, found.spec, buffer)
        outputs = found.engine.infer({found.signature.inputs[0].name: buffer})
        with found.engine.stream:
            scores = heads.decode(found.head, outputs, found.input_size).scores
            per_frame = (scores >= config.conf_threshold).sum(axis=1).get()
        detections, _, _ = found.detect_images(images)
    finally:
        found.close()
    return {"model": model.name, "frames": len(images), "conf_threshold": config.conf_threshold,
            "max_candidates": config.max_candidates, "anchors": int(scores.shape[1]),
            "candidates_mean": float(np.mean(per_frame)), "candidates_max": int(np.max(per_frame)),
            "detections_per_frame": len(detections) / len(images)}


def markdown(results: dict) -> list[str]:
    lines = [f"# Heavy models ({results['gpu']}, {results['date']})", "",
             f"Detector: conf_threshold {results['detector']['conf_threshold']}, max_candidates "
             f"{results['detector']['max_candidates']} per frame before NMS (untrained weights score many anchors alike).",
             "", "## Torch engine alone (FP16, images/s)", "| model | channels-last | graphs | batch | ms | img/s |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['channels_last']} | {r['graphs'][:30]} | {r['batch']} | {r['ms']:.2f} | "
              f"{r['images_per_s']:.0f} |" for r in results.get("engine", [])]
    lines += ["", "## Load on real 1080p frames", "| model | anchors | candidates/frame mean | max | detections/frame |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['anchors']} | {r['candidates_mean']:.0f} | {r['candidates_max']} | "
              f"{r['detections_per_frame']:.1f} |" for r in results.get("load", [])]
    lines += ["", "## End to end vs engine alone at the same batch", "| model | workers | next batch queued | streams | "
              "frames/s | decode processes | mean batch | engine alone img/s at max_batch | ratio | GPU busy (profiled) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['workers']} | {r['queue_next']} | {r['streams']} | {r['fps']:.0f} | {r['decode_processes']} | "
              f"{r['mean_batch']:.1f} | {r['engine_alone']:.0f} | {r['ratio']:.2f} | "
              f"{r.get('profile', {}).get('busy', '')} |" for r in results.get("e2e", [])]
    lines += [f"\n**{name} failed**: {error}" for name, error in results.get("errors", {}).items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="+",
                        default=[EXPORTS / "yolo11s-640-dynamic.onnx", EXPORTS / "yolo11m-640-dynamic.onnx"])
    parser.add_argument("--clip", type=Path, default=REPO / ".device/shared/media/car-detection.mp4")
    parser.add_argument("--clip-frames", type=int, default=600)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES),
                        help="engine batch sizes timed (the engine captures every bucket up to the largest)")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--max-candidates", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=32, help="the end-to-end lane's batch")
    parser.add_argument("--e2e-streams", type=int, default=32)
    parser.add_argument("--e2e-seconds", type=float, default=20.0)
    parser.add_argument("--ring-size", type=int, default=8, help="each stream's ring_size end to end")
    parser.add_argument("--e2e-workers", type=int, nargs="+", default=[1, 2],
                        help="detector.workers end to end (2: the engine and a twin), one run each")
    parser.add_argument("--e2e-queue-next", nargs="+", choices=["on", "off"], default=["on"],
                        help="detector.queue_next end to end, one run each")
    parser.add_argument("--e2e-decode-processes", nargs="+", default=["auto"],
                        help="runtime.decode_processes end to end (auto, or a count; 0 = threads), one run each")
    parser.add_argument("--profile-s", type=float, default=0,
                        help="profile this many seconds of each end-to-end run (PyTorch profiler; its overhead "
                             "lowers that run's frames/s): where the GPU's time goes, in the JSON")
    parser.add_argument("--only", nargs="*", default=None, help="sections: engine load e2e")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    detector = {"conf_threshold": args.conf, "max_candidates": args.max_candidates}
    results: dict = {"gpu": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                     "date": time.strftime("%Y-%m-%d"), "detector": detector, "errors": {}}
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        print(f"missing {missing}: run scripts/export_gpu_models.py bench on a CPU machine and unpack it here")
        return 2
    clip = make_1080p_clip(args.clip, args.clip_frames)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = {
        "engine": lambda: [row for m in args.models for row in engine_rows(m, args.batches)],
        "load": lambda: [load(m, clip, detector) for m in args.models],
        "e2e": lambda: [_e2e(m, clip, args, {**detector, "workers": w, "queue_next": q == "on"}, results.get("engine", []), p)
                        for m in args.models for w in args.e2e_workers for q in args.e2e_queue_next
                        for p in [v if v == "auto" else int(v) for v in args.e2e_decode_processes]],
    }
    run_sections(sections, lambda name: args.only is None or name in args.only, results,
                 args.out / "heavy_models.json", log)
    (args.out / "heavy_models.md").write_text("\n".join(markdown(results)) + "\n")
    print((args.out / "heavy_models.md").read_text())
    return 0


def _e2e(model: Path, clip: Path, args, detector: dict, engine: list[dict], decode_processes) -> dict:
    """End to end with channels-last as the engine measured it best, beside the engine alone at max_batch."""
    alone = [r for r in engine if r["model"] == model.name and r["batch"] == args.max_batch]
    best = max(alone, key=lambda r: r["images_per_s"], default=None)
    channels_last = bool(best and best["channels_last"])
    profile = WindowProfile(args.e2e_seconds / 2, args.profile_s) if args.profile_s else None
    row = end_to_end(model, clip, args.e2e_streams, args.e2e_seconds, args.max_batch, ring_size=args.ring_size,
                     decode_processes=decode_processes, detector={**detector, "channels_last": channels_last},
                     watch=profile and profile.tick)
    if profile is not None:
        row["profile"] = profile.summary()
    engine_alone = best["images_per_s"] if best else float("nan")
    return {"model": model.name, "workers": detector["workers"], "queue_next": detector["queue_next"], "ring_size": args.ring_size, "channels_last": channels_last, "engine_alone": engine_alone,
            "ratio": row["fps"] / engine_alone if best else float("nan"), **row}


if __name__ == "__main__":
    sys.exit(main())
