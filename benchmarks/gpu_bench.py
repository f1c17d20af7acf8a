"""GPU benchmark: NVDEC decode, fused preprocess, GPU NMS, the post-engine kernel, torch engine, end to end.

    python benchmarks/gpu_bench.py --out OUT_DIR [--model M] [--clip C] [--quick]

Writes OUT_DIR/gpu_bench.json and OUT_DIR/gpu_bench.md. The 1080p H.264 clip is made at start by
upscaling a shared 768x432 clip with PyAV's libx264 (crf 23, GOP 30), so every run measures the same
bitstream. End-to-end runs the real pipeline (`PipelineRunner`: StreamWorkers with NVDEC, in decode
processes or threads -> AlignedBuffer -> Detector on the torch engine, frames on the device until
after NMS) on N looped streams and compares with the best decode-only throughput at the same stream
count: bare NVDEC threads in one process, or the pipeline's decode processes without detection.
`add_streams` (`live_change.py`) adds `--add` cameras to `--e2e-streams` running ones.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("gpu_bench")


def make_1080p_clip(source: Path, frames: int) -> Path:
    """`frames` frames of `source` (looped as needed) upscaled to 1920x1080 H.264 (libx264 veryfast,
    crf 23, GOP 30), cached in the temporary folder."""
    import av

    target = Path(tempfile.gettempdir()) / f"streamweave-1080p-{source.stem}-{frames}.mp4"
    if target.exists():
        return target
    with av.open(str(source)) as probe:
        rate = probe.streams.video[0].average_rate or 25
    partial = target.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"crf": "23", "g": "30", "preset": "veryfast"}
        stream.codec_context.thread_count = 0
        written = 0
        while written < frames:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    if written >= frames:
                        break
                    big = frame.reformat(width=1920, height=1080, format="yuv420p")
                    big.pts, big.time_base = written, Fraction(1) / rate  # continuous across loops
                    for packet in stream.encode(big):
                        out.mux(packet)
                    written += 1
        for packet in stream.encode():
            out.mux(packet)
    partial.rename(target)
    return target


def decode_throughput(clip: Path, streams: int, seconds: float, warmup_s: float = 2.0) -> dict:
    """`streams` threads, each looping NVDEC decode of `clip`; total frames per second over `seconds`
    after `warmup_s` (decoder start-up), the steady state like end to end's `fps`."""
    from pipeline.config.models import StreamConfig
    from pipeline.sources.nvdec import NvdecDecoder
    from pipeline.sources.pyav import PyAvReader

    counts = [0] * streams
    stop = threading.Event()

    def work(i: int) -> None:
        config = StreamConfig(id=f"d{i}", url=str(clip), decode="nvdec")
        while not stop.is_set():
            reader = PyAvReader(config, make_decoder=NvdecDecoder)
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
    return {"streams": streams, "fps": total / elapsed, "frames": total, "seconds": elapsed}


def decode_in_processes(clip: Path, streams: int, seconds: float, processes: int, ring_size: int = 8,
                        settle_s: float = 2.0) -> dict:
    """The pipeline's decode stage alone: `streams` looped NVDEC streams in `processes` children
    (`pipeline.sources.processes`), frames copied into this process and batched by the
    AlignedBuffer, then dropped. fps counts frames batched over `seconds`, starting `settle_s`
    after every stream delivered its first frame (process and decoder start-up excluded)."""
    from pipeline.align.buffer import AlignedBuffer
    from pipeline.config.models import LaneConfig, StreamConfig
    from pipeline.sources.processes import DecodeProcesses

    configs = [StreamConfig(id=f"p{i}", url=str(clip), loop=True, decode="nvdec", ring_size=ring_size)
               for i in range(streams)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=64, max_wait_ms=10)], configs)
    children = DecodeProcesses(buffer, processes)
    for config in configs:
        children.add(config, "nvdec")
    frames, begin = 0, time.monotonic()
    ready_s = start = end = None
    while end is None:
        batch = buffer.next_batch(timeout=0.1)
        frames += len(batch) if batch is not None else 0
        now = time.monotonic()
        if ready_s is None:
            if all(w.state.value == "running" for w in children.workers):
                ready_s = now - begin
        elif start is None:
            if now - begin >= ready_s + settle_s:
                start = (now, frames)
        elif now >= start[0] + seconds:
            end = (now, frames)
    for worker in children.workers:
        worker.stop()
    while not all(worker.join(0) for worker in children.workers):
        buffer.next_batch(timeout=0.1)
    children.close()
    (t0, n0), (t1, n1) = start, end
    return {"streams": streams, "processes": processes, "fps": (n1 - n0) / (t1 - t0), "frames": n1 - n0,
            "seconds": t1 - t0, "ready_s": ready_s}


def _time_gpu(fn, repeat: int, stream=None) -> float:
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
        ms = _time_gpu(lambda: pre(frames, out), 20)
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
        ours = _time_gpu(lambda: nms_gpu.batched_nms(*args, 0.45, 300), 10)
        tb, ts = torch.as_tensor(boxes, device="cuda"), torch.as_tensor(scores, device="cuda")
        groups = torch.as_tensor(images.astype(np.int64) * 80 + classes, device="cuda")

        def tv():
            torchvision.ops.batched_nms(tb, ts, groups, 0.45)
            torch.cuda.synchronize()

        tv_ms = _time_gpu(tv, 10)
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
        ms = _time_gpu(lambda: engine.infer({"images": buffer}), 20, engine.stream)
        rows.append({"precision": precision, "cuda_graphs": engine.graph_status == "cuda graphs", "batch": batch,
                     "ms": ms, "images_per_s": batch / ms * 1000})
    for engine in engines.values():
        engine.close()
    return rows


def pipeline_config(model: Path, streams: list, max_batch: int, engine: str = "torch",
                    switch_interval_ms: float | None = None, decode_processes="auto"):
    """The end-to-end benchmarks' pipeline: `streams` (StreamConfigs) in one lane of `max_batch`
    (max_wait_ms 10), the detector on `engine` (FP16 on a GPU), no tracker, no sinks."""
    from pipeline.config.models import DetectorConfig, LaneConfig, PipelineConfig, RuntimeConfig, TrackerConfig

    return PipelineConfig(
        streams=streams,
        lanes=[LaneConfig(name="default", max_batch=max_batch, max_wait_ms=10)],
        detector=DetectorConfig(model=model, engine=engine, precision="fp16"),
        tracker=TrackerConfig(enabled=False),
        runtime=RuntimeConfig(switch_interval_ms=switch_interval_ms, decode_processes=decode_processes),
    )


def end_to_end(model: Path, clip: Path, streams: int, seconds: float, max_batch: int, settle_s: float = 2.0,
               switch_interval_ms: float | None = None, ring_size: int = 8, decode_processes="auto") -> dict:
    """The real pipeline on `streams` looped copies of `clip` (NVDEC, torch FP16, no tracker/sinks),
    decoding in `decode_processes` children (`runtime.decode_processes`; 0 = threads in this process).

    fps is the steady state: frames detected from `settle_s` after every stream delivered its first
    frame (kernel compilation, CUDA graph capture, process and decoder start-ups happen before)
    until the stop request; fps_whole_run includes them.
    """
    from pipeline.config.models import StreamConfig
    from pipeline.runtime.runner import PipelineRunner

    config = pipeline_config(
        model, [StreamConfig(id=f"cam-{i}", url=str(clip), loop=True, decode="nvdec", ring_size=ring_size)
                for i in range(streams)],
        max_batch, switch_interval_ms=switch_interval_ms, decode_processes=decode_processes)
    compiles = _nvrtc_compile_counter()
    runner = PipelineRunner(config)
    samples = []
    snap = runner.run(duration_s=seconds, progress_interval_s=0.5,
                      on_progress=lambda s: samples.append((s.elapsed_s, s.frames_detected, len(compiles), all(
                          stream.get("state") == "running" for stream in s.streams.values()))))
    ready_s = next(sample[0] for sample in samples if sample[3])
    window = [sample for sample in samples if ready_s + settle_s <= sample[0] <= seconds]
    (t0, n0, c0, _), (t1, n1, c1, _) = window[0], window[-1]
    lanes = snap.lanes.get("default", {})
    processes = runner.plan.decode_processes
    return {"streams": streams, "decode_processes": processes, "fps": (n1 - n0) / (t1 - t0), "fps_whole_run": snap.frames_detected / snap.elapsed_s,
            "ready_s": ready_s, "window_s": t1 - t0, "kernel_compiles_in_window": c1 - c0, "kernel_compiles_whole_run": len(compiles),
            "frames": snap.frames_detected,
            "seconds": snap.elapsed_s, "batches": snap.batches, "engine": snap.engine,
            "mean_batch": snap.frames_detected / max(snap.batches, 1), "infer_s": snap.infer_s, "lane": lanes}


def _nvrtc_compile_counter() -> list:
    """A list that grows by one per CuPy kernel compilation (wraps CuPy's private NVRTC class; stays
    empty if CuPy moved it). Compiles inside the measured window are time taken from detection."""
    from cupy.cuda import compiler

    calls: list = []
    program = getattr(compiler, "_NVRTCProgram", None)
    if program is not None:
        original = getattr(program.compile, "__wrapped__", program.compile)

        def compile(self, *args, **kwargs):
            calls.append(1)
            return original(self, *args, **kwargs)

        compile.__wrapped__ = original
        program.compile = compile
    return calls


def write_markdown(results: dict, path: Path) -> None:
    lines = [f"# GPU benchmark ({results['gpu']}, {results['date']})", ""]
    lines += ["## NVDEC decode, 1080p H.264 (frames/s, all streams)", "| streams | fps |", "| --- | --- |"]
    lines += [f"| {r['streams']} | {r['fps']:.0f} |" for r in results.get("decode", [])]
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
    if "decode_processes" in results:
        lines += ["", "## Decode stage in processes (NVDEC in children, frames copied into the main process and batched)",
                  "| streams | processes | frames/s |", "| --- | --- | --- |"]
        lines += [f"| {r['streams']} | {r['processes']} | {r['fps']:.0f} |" for r in results["decode_processes"]]
    if "end_to_end" in results:
        lines += ["", "## End to end", "| decode processes | frames/s detected | mean batch | kernel compiles in window | "
                  "ratio to the best decode-only |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {e['decode_processes']} | {e['fps']:.0f} | {e['mean_batch']:.1f} | {e['kernel_compiles_in_window']} | "
                  f"{e.get('ratio', float('nan')):.2f} |" for e in results["end_to_end"]]
        lines += ["", f"Decode-only at {results['end_to_end'][0]['streams']} streams: threads "
                  f"{results.get('decode_only_threads', float('nan')):.0f} fps, processes "
                  f"{results.get('decode_only_processes', float('nan')):.0f} fps."]
    if "add_streams" in results:
        import live_change

        for row in results["add_streams"]:
            lines += [""] + live_change.markdown(row)
    for name, error in results.get("errors", {}).items():
        lines += ["", f"**{name} failed**: {error}"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import live_change

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=REPO / ".device/shared/models/yolox_nano_416_dynbatch.onnx")
    parser.add_argument("--clip", type=Path, default=REPO / ".device/shared/media/car-detection.mp4")
    parser.add_argument("--clip-frames", type=int, default=1200,
                        help="length of the looped 1080p clip; each loop re-creates a stream's decoder, which "
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
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: decode decode_processes preprocess nms select engine e2e add_streams")
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
        "decode": lambda: [decode_throughput(clip, n, args.decode_seconds) for n in args.streams],
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
    for name, run in sections.items():
        if args.only is not None and name not in args.only and not (name == "end_to_end" and "e2e" in args.only):
            continue
        log.info("section %s", name)
        try:
            results[name] = run()
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others' numbers
            log.exception("section %s failed", name)
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
        (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=2, default=str))
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
