"""The GPU benchmark's pipeline sections, and what `live_change.py` shares with them.

The looped 1080p clip (`make_1080p_clip`), the end-to-end pipeline's config (`pipeline_config`), a
counter of CuPy kernel compilations, and two sections of `gpu_bench.py` with their tables: the
pipeline's decode stage alone (`decode_processes`: NVDEC in decode processes, frames batched and
dropped) and the real pipeline end to end (`e2e`). `gpu_bench.py` runs them and compares end to end
with the best decode-only throughput; `live_change.py` (`add_streams`) runs the same pipeline on cameras.
"""
from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def add_input_arguments(parser, clip_frames_help: str) -> None:
    """--out, --model, --clip and --clip-frames, as every GPU benchmark takes them."""
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=REPO / ".device/shared/models/yolox_nano_416_dynbatch.onnx")
    parser.add_argument("--clip", type=Path, default=REPO / ".device/shared/media/car-detection.mp4")
    parser.add_argument("--clip-frames", type=int, default=1200, help=clip_frames_help)


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


def pipeline_config(model: Path, streams: list, max_batch: int, engine: str = "torch",
                    switch_interval_ms: float | None = None, decode_processes="auto", detector: dict | None = None):
    """The end-to-end benchmarks' pipeline: `streams` (StreamConfigs) in one lane of `max_batch`
    (max_wait_ms 10), the detector on `engine` (FP16 on a GPU; `detector` adds DetectorConfig keys), no
    tracker, no sinks."""
    from pipeline.config.models import DetectorConfig, LaneConfig, PipelineConfig, RuntimeConfig, TrackerConfig

    return PipelineConfig(
        streams=streams,
        lanes=[LaneConfig(name="default", max_batch=max_batch, max_wait_ms=10)],
        detector=DetectorConfig(model=model, engine=engine, precision="fp16", **(detector or {})),
        tracker=TrackerConfig(enabled=False),
        runtime=RuntimeConfig(switch_interval_ms=switch_interval_ms, decode_processes=decode_processes),
    )


def end_to_end(model: Path, clip: Path, streams: int, seconds: float, max_batch: int, settle_s: float = 2.0,
               switch_interval_ms: float | None = None, ring_size: int = 8, decode_processes="auto",
               detector: dict | None = None, watch=None) -> dict:
    """The real pipeline on `streams` looped copies of `clip` (NVDEC, torch FP16, no tracker/sinks),
    decoding in `decode_processes` children (`runtime.decode_processes`; 0 = threads in this process).
    watch(elapsed_s), when given, is called at every progress sample (gpu_profile.WindowProfile.tick).

    fps is the steady state: frames detected from `settle_s` after every stream delivered its first
    frame (kernel compilation, CUDA graph capture, process and decoder start-ups happen before)
    until the stop request; fps_whole_run includes them.
    """
    from pipeline.config.models import StreamConfig
    from pipeline.runtime.runner import PipelineRunner

    config = pipeline_config(
        model, [StreamConfig(id=f"cam-{i}", url=str(clip), loop=True, decode="nvdec", ring_size=ring_size)
                for i in range(streams)],
        max_batch, switch_interval_ms=switch_interval_ms, decode_processes=decode_processes, detector=detector)
    compiles = nvrtc_compile_counter()
    runner = PipelineRunner(config)
    samples = []
    processes = 0  # decode processes running, at most (the plan says how many may start)

    def sample(s) -> None:
        nonlocal processes
        children = runner.parts.sources.children
        processes = max(processes, children.count if children is not None else 0)
        samples.append((s.elapsed_s, s.frames_detected, len(compiles),
                        all(stream.get("state") == "running" for stream in s.streams.values())))
        if watch is not None:
            watch(s.elapsed_s)

    snap = runner.run(duration_s=seconds, progress_interval_s=0.5, on_progress=sample)
    ready_s = next(sample[0] for sample in samples if sample[3])
    window = [sample for sample in samples if ready_s + settle_s <= sample[0] <= seconds]
    (t0, n0, c0, _), (t1, n1, c1, _) = window[0], window[-1]
    lanes = snap.lanes.get("default", {})
    return {"streams": streams, "decode_processes": processes, "fps": (n1 - n0) / (t1 - t0), "fps_whole_run": snap.frames_detected / snap.elapsed_s,
            "ready_s": ready_s, "window_s": t1 - t0, "kernel_compiles_in_window": c1 - c0, "kernel_compiles_whole_run": len(compiles),
            "frames": snap.frames_detected,
            "seconds": snap.elapsed_s, "batches": snap.batches, "engine": snap.engine,
            "mean_batch": snap.frames_detected / max(snap.batches, 1), "infer_s": snap.infer_s, "lane": lanes}


def nvrtc_compile_counter() -> list:
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


def markdown(results: dict) -> list[str]:
    """The tables of the `decode_processes` and `e2e` sections in `results` (none when neither ran)."""
    lines: list[str] = []
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
    return lines


def run_sections(sections: dict, wanted, results: dict, path: Path, log) -> None:
    """Run each section `wanted` asks for (None: all) into `results[name]`; a section that fails is logged and
    its error kept in `results["errors"]`, never losing the others' numbers; `path` rewritten after each."""
    import json

    for name, run in sections.items():
        if not wanted(name):
            continue
        log.info("section %s", name)
        try:
            results[name] = run()
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others' numbers
            log.exception("section %s failed", name)
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
        path.write_text(json.dumps(results, indent=2, default=str))
