"""Frames per second through AlignedBuffer with many producer threads and one consumer.

    .venv/bin/python benchmarks/align_bench.py --streams 64 --frames 500 --mode file

Each producer thread puts tiny frames (the buffer never touches pixels, so image size is
irrelevant) as fast as it can; the consumer takes batches until every stream has ended. `file`
streams block when their ring is full (nothing lost); `live` streams drop their oldest frame, so
unpaced live producers mostly measure dropping: pace them with `--fps` like real cameras.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from pipeline.align import AlignedBuffer
from pipeline.config.models import LaneConfig, StreamConfig
from pipeline.types import Frame


def make_buffer(args: argparse.Namespace) -> AlignedBuffer:
    lanes = [
        LaneConfig(name="bulk", priority=0, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms),
        LaneConfig(name="urgent", priority=10, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms),
    ]
    urgent = max(1, args.streams // 4)
    streams = [
        StreamConfig(
            id=f"cam-{i}",
            url=f"rtsp://127.0.0.1/cam-{i}" if args.mode == "live" else f"/clips/cam-{i}.mp4",
            lane="urgent" if i < urgent else "bulk",
            ring_size=args.ring_size,
        )
        for i in range(args.streams)
    ]
    return AlignedBuffer(lanes, streams)


def produce(buf: AlignedBuffer, stream_id: str, frames: int, fps: float, stop: threading.Event) -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    start = time.monotonic()
    try:
        for seq in range(frames):
            if fps > 0 and stop.wait(max(0.0, start + seq / fps - time.monotonic())):
                return
            frame = Frame(stream_id, seq, seq * 40_000_000, time.time_ns(), image, 2, 2)
            while not buf.put(frame, timeout=0.1):
                if stop.is_set():
                    return
    finally:
        buf.end_stream(stream_id)


def consume(buf: AlignedBuffer, stop: threading.Event) -> tuple[int, int]:
    frames = batches = 0
    while not buf.finished and not stop.is_set():
        batch = buf.next_batch(0.5)
        if batch is not None:
            frames += len(batch)
            batches += 1
    return frames, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--frames", type=int, default=500, help="frames per stream")
    parser.add_argument("--mode", choices=["file", "live"], default="file")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--ring-size", type=int, default=8)
    parser.add_argument("--fps", type=float, default=0.0, help="pace each producer like a camera (0 = as fast as possible)")
    parser.add_argument("--limit-s", type=float, default=120.0, help="give up after this long")
    args = parser.parse_args()

    buf = make_buffer(args)
    stop = threading.Event()
    threads = [
        threading.Thread(target=produce, args=(buf, f"cam-{i}", args.frames, args.fps, stop), name=f"decode:cam-{i}")
        for i in range(args.streams)
    ]
    timer = threading.Timer(args.limit_s, stop.set)
    timer.start()
    start = time.perf_counter()
    for t in threads:
        t.start()
    frames, batches = consume(buf, stop)
    elapsed = time.perf_counter() - start
    timer.cancel()
    stop.set()
    for t in threads:
        t.join(5)

    lanes = buf.stats()["lanes"]
    dropped = sum(lane["dropped_overflow"] + lane["dropped_age"] for lane in lanes.values())
    print(
        f"{args.streams} producers ({args.mode}, fps {args.fps or 'unpaced'}), {args.frames} frames each, max_batch {args.max_batch}: "
        f"{frames} frames in {batches} batches, {elapsed:.2f} s -> {frames / elapsed:,.0f} frames/s, "
        f"{frames / max(batches, 1):.1f} frames/batch, {dropped} dropped"
    )
    for name, lane in lanes.items():
        print(f"  lane {name}: {lane['batches']} batches, mean {lane['mean_batch_size']:.1f}, dropped {lane['dropped_overflow']}")


if __name__ == "__main__":
    main()
