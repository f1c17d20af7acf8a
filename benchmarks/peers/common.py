"""What every peer shares: the cameras it reads (the feeder's paced MPEG-TS URLs), each frame's capture time
(`epoch_ns + pts`, the moment the feeder sent it, or `epoch_ns + start + position` for readers that count
from the stream's first frame), and the record it writes for the harness (peers.py)."""
from __future__ import annotations

import argparse
import json
import queue
import threading
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True)
    parser.add_argument("--urls", nargs="+", required=True)
    parser.add_argument("--epoch-ns", type=int, required=True, help="the feeder's epoch: capture = epoch + pts")
    parser.add_argument("--window", type=int, nargs=2, required=True, metavar=("START_NS", "END_NS"),
                        help="frames captured in this wall-clock window are recorded")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def capture_ns(epoch_ns: int, pts: int | None, time_base: Fraction) -> int:
    return epoch_ns + round((pts or 0) * time_base * 1_000_000_000)


def stream_start_ns(url: str) -> int:
    """The pts (ns) of the first frame the feeder sent on its latest connection to the camera at `url`
    (`/<camera>.start`): where a reader's stream began, as OpenCV's CAP_PROP_POS_MSEC counts from there."""
    with urllib.request.urlopen(url.removesuffix(".ts") + ".start", timeout=5) as reply:
        return int(reply.read())


def position_capture_ns(epoch_ns: int, start_ns: int, position_ms: float) -> int:
    """A frame's capture time from its position in the stream (ms since the stream's first frame)."""
    return epoch_ns + start_ns + round(position_ms * 1_000_000)


class Record:
    """Per camera, the latency (ms) of every frame captured inside the window; written as JSON."""

    def __init__(self, cameras: int, window: tuple[int, int]):
        self.window = window
        self.latency_ms: list[list[float]] = [[] for _ in range(cameras)]
        self._lock = threading.Lock()

    def done(self, camera: int, captured_ns: int, now_ns: int | None = None) -> None:
        if self.window[0] <= captured_ns <= self.window[1]:
            with self._lock:
                self.latency_ms[camera].append(((now_ns or time.time_ns()) - captured_ns) / 1e6)

    def finished(self) -> bool:
        return time.time_ns() > self.window[1] + 2_000_000_000  # frames of the window's end had 2 s to come out

    def write(self, path: Path, **extra) -> None:
        path.write_text(json.dumps({"latency_ms": self.latency_ms, **extra}))


class PyAvCamera(threading.Thread):
    """The reader thread of the typical script: decodes one URL on the CPU (PyAV) and keeps the newest
    frames in a small queue, dropping the oldest when the consumer falls behind (counted)."""

    def __init__(self, index: int, url: str, epoch_ns: int, depth: int = 2):
        super().__init__(name=f"camera-{index}", daemon=True)
        self.index, self.url, self.epoch_ns = index, url, epoch_ns
        self.frames: queue.Queue = queue.Queue(depth)
        self.dropped = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with av.open(self.url, options={"fflags": "nobuffer"}) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if self.stop.is_set():
                    return
                item = (capture_ns(self.epoch_ns, frame.pts, frame.time_base), frame.to_ndarray(format="rgb24"))
                while True:
                    try:
                        self.frames.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            self.frames.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            pass
