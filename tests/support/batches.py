"""Taking batches from an AlignedBuffer in tests of what feeds it (decode processes)."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable


class Taker:
    """Takes batches from `buffer` (sleeping `pause_s` after each, to play a slow consumer);
    `frames[stream_id]` lists `keep(frame)` of each frame taken."""

    def __init__(self, buffer, keep: Callable[[Any], Any] = lambda frame: frame, pause_s: float = 0.0):
        self.buffer = buffer
        self.frames: dict[str, list] = defaultdict(list)
        self._keep = keep
        self._pause_s = pause_s

    def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Take until `done()` (True) or `timeout` seconds have passed (False)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self._take_one()
        return True

    def for_seconds(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._take_one()

    def _take_one(self) -> None:
        batch = self.buffer.next_batch(timeout=0.1)
        for frame in batch.frames if batch is not None else []:
            self.frames[frame.stream_id].append(self._keep(frame))
        time.sleep(self._pause_s)


def stop_and_drain(processes, buffer) -> None:
    """Stop every stream of `processes`, keep taking batches until each has ended, then close."""
    for worker in processes.workers:
        worker.stop()
    while not all(worker.join(0) for worker in processes.workers):
        buffer.next_batch(timeout=0.1)
    processes.close()


def decode_in_children(streams, count: int, buffer, decoder: str, plugin_modules=()):
    """`count` decode processes decoding `streams` (their rings already in `buffer`) with `decoder`,
    spread over the children as the pipeline does."""
    from pipeline.sources.processes import DecodeProcesses

    processes = DecodeProcesses(buffer, count, plugin_modules=list(plugin_modules))
    for config in streams:
        processes.add(config, decoder)
    return processes
