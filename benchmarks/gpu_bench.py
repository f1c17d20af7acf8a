"""GPU benchmark: NVDEC decode and the frames it holds, fused preprocess, GPU NMS, the post-engine kernel, torch engine, end to end.

    python benchmarks/gpu_bench.py --out OUT_DIR [--model M] [--clip C] [--quick]

Writes OUT_DIR/gpu_bench.json and OUT_DIR/gpu_bench.md. The 1080p H.264 clip is made at start by
upscaling a shared 768x432 clip with PyAV's libx264 (crf 23, GOP 30), so every run measures the same
bitstream. End-to-end runs the real pipeline (`PipelineRunner`: StreamWorkers with NVDEC, in decode
processes or threads -> AlignedBuffer -> Detector on the torch engine, frames on the device until
after NMS) on N looped streams and compares with the best decode-only throughput at the same stream
count: bare NVDEC threads in one process, or the pipeline's decode processes without detection
(both pipeline sections, `decode_processes` and `e2e`, are in `pipeline_bench.py`).
`add_streams` (`live_change.py`) adds `--add` cameras to `--e2e-streams` running ones.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import live_change
import numpy as np
from pipeline_bench import add_input_arguments, decode_in_processes, end_to_end, make_1080p_clip, run_sections
from pipeline_bench import markdown as pipeline_markdown

log = logging.getLogger("gpu_bench")


def decode_throughput(clip: Path, streams: int, seconds: float, warmup_s: float = 2.0, low_latency: bool = False) -> dict:
    """`streams` threads, each looping NVDEC decode of `clip` (in its low-latency display mode when `low_latency`);
    total frames per second over `seconds` after `warmup_s` (decoder start-up), the steady state like end to end's
    `fps`."""
    from pipeline.config.models import StreamConfig
    from pipeline.sources.nvdec import NvdecDecoder
    from pipeline.sources.pyav import PyAvReader

    make_decoder = functools.partial(NvdecDecoder, low_latency=low_latency)

    counts = [0] * streams
    stop = threading.Event()

    def work(i: int) -> None:
        config = StreamConfig(id=f"d{i}", url=str(clip), decode="nvdec")
        while not stop.is_set():
            reader = PyAvReader(config, make_decoder=make_decoder)
            for _ in reader.frames():
                counts[i] += 1
                if stop.is_set():
                    break
            reader.close()

    threads = [threading.Thread(target=work, args=(i,), name=f"decode:d{i}", daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    start, before = time.perf_counter(), sum(counts)
    time.sleep(seconds)
    total = sum(counts) - before
    elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join(30)
    return {"streams": streams, "fps": total / elapsed, "frames": total, "seconds": elapsed, "low_latency": low_latency}


def decoder_hold(source: Path) -> list[dict]:
    """How many packets NVDEC reads beyond a picture's own before it hands the picture on, as a file read for
    throughput and as a camera: `source` as recorded, and a 1080p30 camera stream re-encoded from it (x264,
    without and with B-frames), fed one packet at a time. A live camera's picture waits that many frame periods
    in the decoder."""
    from pipeline.bench.clips import camera_clip
    from pipeline.sources.demux import Demuxer
    from pipeline.sources.nvdec import NvdecDecoder
    from pipeline.types import pts_to_ns

    rows = []
    clips = [("as recorded", source)] + [
        (f"1080p30, {bframes} B-frames", camera_clip(source, Path(tempfile.gettempdir()), 1920, 1080, 30, seconds=4,
                                                       bframes=bframes)) for bframes in (0, 2)]
    for name, clip in clips:
        for low_latency in (False, True):
            demuxer = Demuxer(str(clip), clip.name)
            decoder = NvdecDecoder(demuxer.open(), clip.name, low_latency=low_latency)
            read: list[int] = []  # the packets' pts, ns, in the order read
            held: list[int] = []

            def take(frames: list) -> None:
                held.extend(len(read) - 1 - read.index(f.pts_ns) for f in frames if f.pts_ns in read)

            for demuxed in demuxer.packets():
                read.append(pts_to_ns(demuxed.pts, demuxed.time_base))
                for packet in demuxer.for_decoder(demuxed, annexb=True):
                    take(decoder.decode(packet))
            take(decoder.flush())
            decoder.close()
            demuxer.close()
            held.sort()
            rows.append({"stream": name, "low_latency": low_latency, "packets": len(read), "frames": len(held),
                         "held_median": held[len(held) // 2], "held_max": held[-1]})
    return rows



def time_gpu(fn, repeat: int, stream=None) -> float:
    """Median milliseconds of `fn()` measured with CUDA events on `stream` (after 3 warm-ups)."""
    import cupy

    stream = stream or cupy.cuda.get_current_stream()
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def preprocess_times(clip: Path, batch: int) -> list[dict]:
    """Fused NV12 -> 416x416 FP16 letterbox of `batch` 1080p frames, antialiased and plain bilinear."""
    import cupy

    from pipeline.detect.preprocess import PreprocessSpec
    from pipeline.detect.preprocess_gpu import GpuPreprocessor
    from pipeline.types import Frame
    from tests.gpu.helpers import decode_clip

    decoded = decode_clip(clip, "nvdec", limit=batch)
    frames = [Frame("b", i, d.pts_ns, 0, d.image, d.width, d.height, "nv12")
              for i, d in enumerate(decoded)]
    frames = (frames * (batch // len(frames) + 1))[:batch]
    spec = PreprocessSpec(416, 416, align="top_left", color="bgr", scale=1.0)
    out = cupy.empty((batch, 3, 416, 416), cupy.float16)
    rows = []
    for antialias in (True, False):
        pre = GpuPreprocessor(spec, antialias=antialias)
        ms = time_gpu(lambda: pre(frames, out), 20)
        rows.append({"batch": batch, "antialias": antialias, "ms": ms, "frames_per_s": batch / ms * 1000})
    return rows


def nms_times(sizes=(1000, 10000, 50000)) -> list[dict]:
    """GPU NMS vs torchvision.ops.batched_nms on random boxes (64 images, 80 classes), median ms."""
    import cupy
    import torch
    import torchvision

    from pipeline.detect import nms_gpu

    rows = []
    for m in sizes:
        rng = np.random.default_rng(m)
        xy = rng.uniform(0, 400, (m, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(8, 80, (m, 2)).astype(np.float32)], 1)
        scores = rng.uniform(0, 1, m).astype(np.float32)
        classes = rng.integers(0, 80, m).astype(np.int32)
        images = rng.integers(0, 64, m).astype(np.int32)
        args = [cupy.asarray(a) for a in (boxes, scores, classes, images)]
        ours = time_gpu(lambda: nms_gpu.batched_nms(*args, 0.45, 300), 10)
        tb, ts = torch.as_tensor(boxes, device="cuda"), torch.as_tensor(scores, device="cuda")
        groups = torch.as_tensor(images.astype(np.int64) * 80 + classes, device="cuda")

        def tv():
            torchvision.ops.batched_nms(tb, ts, groups, 0.45)
            torch.cuda.synchronize()

        tv_ms = time_gpu(tv, 10)
        rows.append({"boxes": m, "ours_ms": ours, "torchvision_ms": tv_ms})
    return rows


def select_times(model: Path, clip: Path, batch: int) -> dict:
    """Wall ms per batch after the engine (head decode, filter, NMS, source pixels, copy to the host) on
    YOLOX-Nano's outputs for `batch` real 1080p frames: the fused kernel vs the general CuPy path."""
    import cupy

    from pipeline.config.models import DetectorConfig
    from pipeline.detect import heads
    from pipeline.detect.detector_gpu import select_general
    from pipeline.detect.engines.torch_engine import TorchEngine
    from pipeline.detect.preprocess import PreprocessSpec
    from pipeline.detect.preprocess_gpu import GpuPreprocessor
    from pipeline.detect.select_gpu import FusedSelect
    from pipeline.types import Frame
    from tests.gpu.helpers import decode_clip

    decoded = decode_clip(clip, "nvdec", skip=100, limit=batch)
    frames = [Frame("b", i, d.pts_ns, 0, d.image, d.width, d.height, "nv12") for i, d in enumerate(decoded)]
    config = DetectorConfig(model=model)
    engine = TorchEngine(model, config, max_batch=batch)
    spec = PreprocessSpec(416, 416, align="top_left", color="bgr", scale=1.0)
    buffer = engine.input_buffer(batch)
    with engine.stream:
        scale, pad = GpuPreprocessor(spec)(frames, buffer, engine.stream)
        outputs = engine.infer({"images": buffer})
        sizes = np.asarray([(f.width, f.height) for f in frames], np.float32)
        table = cupy.asarray(np.concatenate([sizes, scale, pad], 1).astype(np.float32))
        fused = FusedSelect("yolox", (416, 416), config)
        paths = {
            "fused": lambda: fused(outputs, table, batch, engine.stream),
            "general": lambda: select_general(heads.decode("yolox", outputs, (416, 416)), table, batch, config),
        }
        result: dict = {"batch": batch}
        for name, run in paths.items():
            for _ in range(3):
                found = run()
            start = time.perf_counter()
            for _ in range(30):
                run()
            result[f"{name}_ms"] = (time.perf_counter() - start) / 30 * 1000
            result[f"{name}_detections"] = len(found.score)
    engine.close()
    return result


def engine_throughput(model: Path, batches=(1, 8, 16, 32, 64, 128)) -> list[dict]:
    """Torch engine images/s per batch size: FP16 with CUDA graphs, FP16 eager at 64, FP32 graphs at 64."""
    import cupy

    from pipeline.config.models import DetectorConfig
    from pipeline.detect.engines.torch_engine import TorchEngine

    rows = []
    cases = [("fp16", True, b) for b in batches] + [("fp16", False, 64), ("fp32", True, 64)]
    engines: dict = {}
    for precision, graphs, batch in cases:
        key = (precision, graphs)
        if key not in engines:
            config = DetectorConfig(model=model, precision=precision)
            engines[key] = TorchEngine(model, config, max_batch=max(batches), use_cuda_graphs=graphs)
        engine = engines[key]
        buffer = engine.input_buffer(batch)
        with engine.stream:
            buffer[...] = cupy.random.uniform(0, 255, buffer.shape).astype(buffer.dtype)
        ms = time_gpu(lambda: engine.infer({"images": buffer}), 20, engine.stream)
        rows.append({"precision": precision, "cuda_graphs": engine.graph_status == "cuda graphs", "batch": batch,
                     "ms": ms, "images_per_s": batch / ms * 1000})
    for engine in engines.values():
        engine.close()
    return rows



def write_markdown(results: dict, path: Path) -> None:
    lines = [f"# GPU benchmark ({results['gpu']}, {results['date']})", ""]
    lines += ["## NVDEC decode, 1080p H.264 (frames/s, all streams)", "| streams | fps |", "| --- | --- |"]
    lines += [f"| {r['streams']} | {r['fps']:.0f} |" for r in results.get("decode", [])]
    if results.get("decode"):
        mode = "low-latency" if results["decode"][0]["low_latency"] else "default"
        lines += ["", f"(NVDEC's {mode} display mode)"]
    lines += ["", f"## Packets NVDEC holds a picture for ({results['clip']['source']})", "| stream | decoded as | median | max |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {r['stream']} | {'camera' if r['low_latency'] else 'file'} | {r['held_median']} | {r['held_max']} |"
              for r in results.get("hold", [])]
    lines += ["", "## Fused NV12 -> 416x416 FP16 letterbox", "| batch | antialias | ms | frames/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['antialias']} | {r['ms']:.3f} | {r['frames_per_s']:.0f} |" for r in results.get("preprocess", [])]
    lines += ["", "## NMS (64 images, 80 classes)", "| boxes | ours ms | torchvision ms |", "| --- | --- | --- |"]
    lines += [f"| {r['boxes']} | {r['ours_ms']:.2f} | {r['torchvision_ms']:.2f} |" for r in results.get("nms", [])]
    if "select" in results:
        r = results["select"]
        lines += ["", f"## After the engine, {r['batch']} frames (YOLOX-Nano outputs; wall ms per batch)",
                  "| fused kernel | general CuPy path | detections (fused / general) |", "| --- | --- | --- |",
                  f"| {r['fused_ms']:.2f} | {r['general_ms']:.2f} | {r['fused_detections']} / {r['general_detections']} |"]
    lines += ["", "## Torch engine, YOLOX-Nano 416", "| precision | CUDA graphs | batch | ms | img/s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['precision']} | {r['cuda_graphs']} | {r['batch']} | {r['ms']:.2f} | {r['images_per_s']:.0f} |"
              for r in results.get("engine", [])]
    lines += pipeline_markdown(results)
    if "add_streams" in results:
        for row in results["add_streams"]:
            lines += [""] + live_change.markdown(row)
    for name, error in results.get("errors", {}).items():
        lines += ["", f"**{name} failed**: {error}"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser, "length of the looped 1080p clip; each loop re-creates a stream's decoder, which "
                                "holds the interpreter lock while it does (cameras create theirs once)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--decode-seconds", type=float, default=6.0)
    parser.add_argument("--e2e-streams", type=int, default=64)
    parser.add_argument("--e2e-seconds", type=float, default=25.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--switch-interval-ms", type=float, default=None, help="runtime.switch_interval_ms for end to end")
    parser.add_argument("--ring-size", type=int, default=8, help="streams' ring_size for end to end (the config default)")
    parser.add_argument("--decode-processes", nargs="+", default=["auto"],
                        help="runtime.decode_processes values for end to end (one run each), e.g. 0 auto")
    parser.add_argument("--low-latency", action="store_true",
                        help="decode section: NVDEC's low-latency display mode, as cameras are decoded")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: decode hold decode_processes preprocess nms select engine e2e add_streams")
    live_change.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import cupy

    args.out.mkdir(parents=True, exist_ok=True)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    results: dict = {"gpu": gpu, "date": time.strftime("%Y-%m-%d"), "errors": {}}
    clip = make_1080p_clip(args.clip, args.clip_frames)
    process_counts = [-(-args.e2e_streams // 8) if p == "auto" else int(p) for p in args.decode_processes]
    results["clip"] = {"source": args.clip.name, "frames": args.clip_frames, "size": "1920x1080"}
    sections = {
        "decode": lambda: [decode_throughput(clip, n, args.decode_seconds, low_latency=args.low_latency)
                           for n in args.streams],
        "hold": lambda: decoder_hold(args.clip),
        "decode_processes": lambda: [decode_in_processes(clip, args.e2e_streams, args.decode_seconds, processes=n,
                                                         ring_size=args.ring_size) for n in process_counts if n],
        "preprocess": lambda: preprocess_times(clip, args.max_batch),
        "nms": nms_times,
        "select": lambda: select_times(args.model, clip, args.max_batch),
        "engine": lambda: engine_throughput(args.model),
        "end_to_end": lambda: [end_to_end(args.model, clip, args.e2e_streams, args.e2e_seconds, args.max_batch,
                                          switch_interval_ms=args.switch_interval_ms, ring_size=args.ring_size,
                                          decode_processes=int(p) if p.isdigit() else p)
                               for p in args.decode_processes],
        "add_streams": lambda: [live_change.add_streams(args.model, clip, args.e2e_streams, max_batch=args.max_batch,
                                                        ring_size=args.ring_size, switch_interval_ms=args.switch_interval_ms,
                                                        decode_processes=int(p) if p.isdigit() else p,
                                                        **live_change.change_settings(args))
                                for p in args.decode_processes],
    }
    run_sections(sections, lambda name: args.only is None or name in args.only
                 or (name == "end_to_end" and "e2e" in args.only), results, args.out / "gpu_bench.json", log)
    threads = [r["fps"] for r in results.get("decode", []) if r["streams"] == args.e2e_streams]
    if threads:
        results["decode_only_threads"] = threads[0]
    if results.get("decode_processes"):
        results["decode_only_processes"] = max(r["fps"] for r in results["decode_processes"])
    best = max(results.get("decode_only_threads", 0), results.get("decode_only_processes", 0))
    for row in results.get("end_to_end", []) if best else []:
        row["ratio"] = row["fps"] / best
    (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=2, default=str))
    write_markdown(results, args.out / "gpu_bench.md")
    print((args.out / "gpu_bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
