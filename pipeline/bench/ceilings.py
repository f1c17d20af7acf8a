"""The ceilings a real-time camera count is read against, measured in the same run: the decode stage alone
(looped copies of the camera clip read as fast as they decode, frames batched and dropped) and the engine
alone (preprocessed batches run over and over, per batch size)."""
from __future__ import annotations

import logging
import threading
import time

from pipeline.align.buffer import AlignedBuffer
from pipeline.bench.ramp import bulk_lane
from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import Plan, plan_stream
from pipeline.detect.detector import Detector
from pipeline.errors import SourceError
from pipeline.masking import mask_url
from pipeline.sources.manager import Sources

log = logging.getLogger(__name__)


def decode_ceiling(config: PipelineConfig, plan: Plan, url: str, streams: int, seconds: float,
                   settle_s: float = 2.0, start_timeout_s: float = 120.0) -> dict:
    """Frames/s the decode stage gives for `streams` unpaced looped copies of `url`, decoded as `plan` says
    (NVDEC in decode processes on a GPU machine, threads on the CPU), from `settle_s` after each stream's
    first frame for `seconds`. A stream that ends before the others all run (a decoder the GPU could not create)
    is left out: the figure is over those that run (`streams`), beside the ones asked for (`asked`) and why each
    other one ended (`not_running`). SourceError when none runs, or not all of them within `start_timeout_s`."""
    buffer = AlignedBuffer(list(config.lanes))
    sources = Sources(buffer, decode_processes=plan.decode_processes, per_child=plan.per_child,
                      device=plan.detector.device)
    lane = bulk_lane([lane.name for lane in config.lanes])  # where the ramp's cameras are batched
    configs = [StreamConfig(id=f"d{i}", url=url, loop=True, lane=lane) for i in range(streams)]
    for stream in configs:
        buffer.add_stream(stream)
        sources.add(stream, plan_stream(stream, plan, nvdec_streams=streams))
    frames, begin, start, end = 0, time.monotonic(), None, None
    ready_at, running, ended = None, [], {}
    try:
        while end is None:
            batch = buffer.next_batch(timeout=0.1)
            frames += len(batch) if batch is not None else 0
            now = time.monotonic()
            if ready_at is None:
                running = _started(sources, configs, url, now - begin, start_timeout_s)
                if running:
                    ready_at, ended = now, {s.id: _why(sources, s.id) for s in configs if s.id not in running}
            elif start is None:
                if now >= ready_at + settle_s:
                    start = (now, frames)
            elif now >= start[0] + seconds:
                end = (now, frames)
    finally:
        children = sources.children.count if sources.children is not None else 0
        for stream in configs:
            sources.stop(stream.id)
        while not all(sources.worker(s.id).join(0) for s in configs):
            buffer.next_batch(timeout=0.1)
        sources.close()
    (t0, n0), (t1, n1) = start, end
    if ended:
        log.warning("decode alone: %d of %d streams ran; left out: %s", len(running), streams,
                    "; ".join(f"{i}: {why}" for i, why in ended.items()))
    return {"streams": len(running), "asked": streams, "not_running": ended,
            "fps": round((n1 - n0) / (t1 - t0), 1), "ready_s": round(ready_at - begin, 2),
            "decode_processes": children}


ENDED = ("finished", "stopped", "failed")


def _started(sources: Sources, configs: list[StreamConfig], url: str, waited_s: float, timeout_s: float) -> list[str]:
    """The streams that run, once each runs or has ended; [] while one is still starting. SourceError when
    every one ended, or one is still starting after `timeout_s`."""
    states = {s.id: sources.worker(s.id).state.value for s in configs}
    if all(state == "running" or state in ENDED for state in states.values()):
        running = [i for i, state in states.items() if state == "running"]
        if not running:
            raise SourceError(f"decode ceiling: no stream of {mask_url(url)} ran ({_why(sources, configs[0].id)}); "
                              "lower --decode-streams, or --decode-streams 0 to skip it")
        return running
    if waited_s > timeout_s:
        starting = [i for i, state in states.items() if state != "running" and state not in ENDED]
        raise SourceError(f"decode ceiling: {len(starting)} of {len(configs)} streams of {mask_url(url)} did not "
                          f"start within {timeout_s:.0f} s ({', '.join(starting[:5])}); lower --decode-streams, "
                          "or --decode-streams 0 to skip it")
    return []


def _why(sources: Sources, stream_id: str) -> str:
    worker = sources.worker(stream_id)
    return worker.stats().get("last_error") or worker.state.value


def engine_ceiling(detector: Detector, batches: list[int], seconds: float) -> list[dict]:
    """Images/s of the detector's engine alone at each batch size (up to its max_batch), with as many
    batches in flight as the pipeline runs (`detector.workers`)."""
    rows = []
    for batch in (b for b in batches if b <= detector.max_batch):
        rows.append({"batch": batch, "images_per_s": round(_images_per_s(detector, batch, seconds), 1)})
        log.info("engine alone, batch %d: %.0f images/s", batch, rows[-1]["images_per_s"])
    return rows


def _images_per_s(detector: Detector, batch: int, seconds: float) -> float:
    engine, device = detector.engine, detector.plan.on_device
    workers = 1 if device else detector.workers
    feeds = [detector.sample_inputs(batch) for _ in range(workers)] if not device else [detector.sample_inputs(batch)]
    engine.infer(feeds[0])  # warm: first-call allocations, graph capture
    if device:
        engine.stream.synchronize()
    counts = [0] * workers
    deadline, stop = time.perf_counter() + seconds, threading.Event()

    def loop(i: int) -> None:
        while time.perf_counter() < deadline and not stop.is_set():
            engine.infer(feeds[i])
            if device:
                engine.stream.synchronize()
            counts[i] += batch

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,), name=f"bench:engine{i}") for i in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:  # Ctrl-C: no batch runs on once the engine may be closed
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
    return sum(counts) / (time.perf_counter() - t0)
