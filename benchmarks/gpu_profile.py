"""Where the GPU's time goes in a running pipeline: PyTorch's profiler (CUPTI) over a window, read back as
a summary a person can compare between runs.

    profile = WindowProfile(start_s=8, seconds=3)   # call profile.tick(elapsed_s) as the run goes on
    ...
    profile.summary()   # {"busy": 0.71, "idle_ms_by_gap_length": {...}, "kernels": [...], "host_cuda_calls": [...]}

CUPTI records every kernel and copy this process's CUDA context runs, whichever library launched it
(PyTorch, CuPy, PyNvVideoCodec), so the summary covers preprocessing, the network, post-processing and the
decoded frames' copies. Work of other processes (decode processes) is not in it; the time the GPU gave
them shows as gaps here.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


class WindowProfile:
    """Profiles from `start_s` to `start_s + seconds` of a run's elapsed time (`tick` is called with it)."""

    def __init__(self, start_s: float, seconds: float):
        self.start_s, self.seconds = start_s, seconds
        self._profiler = None
        self._events: list[dict] | None = None

    def tick(self, elapsed_s: float) -> None:
        import torch

        if self._profiler is None and self._events is None and elapsed_s >= self.start_s:
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            self._profiler.start()
        elif self._profiler is not None and elapsed_s >= self.start_s + self.seconds:
            self._profiler.stop()
            path = Path(tempfile.mkdtemp()) / "trace.json"
            self._profiler.export_chrome_trace(str(path))
            self._profiler = None
            self._events = json.loads(path.read_text()).get("traceEvents", [])

    def summary(self) -> dict:
        return summarize(self._events) if self._events else {"error": "the window was not reached"}


def summarize(events: list[dict], top: int = 25) -> dict:
    """GPU busy fraction over the span of GPU work, idle gaps by length, time per kernel name (top), per
    stream, and the host's CUDA runtime calls (where the threads wait)."""
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    if not gpu:
        return {"error": "no GPU events"}
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in gpu)
    begin, end = spans[0][0], max(s[1] for s in spans)
    busy, gaps, reach = 0.0, [], begin
    for start, stop in spans:
        if start > reach:
            gaps.append(start - reach)
        busy += max(0.0, stop - max(start, reach))
        reach = max(reach, stop)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_stream: dict[str, float] = defaultdict(float)
    for e in gpu:
        name = e["cat"] if e["cat"] != "kernel" else e.get("name", "?")[:90]
        by_name[name][0] += 1
        by_name[name][1] += float(e.get("dur", 0))
        by_stream[str(e.get("tid"))] += float(e.get("dur", 0))
    host: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cuda_runtime":
            host[e.get("name", "?")][0] += 1
            host[e.get("name", "?")][1] += float(e.get("dur", 0))
    span_ms = (end - begin) / 1000
    edges = (0.05, 0.2, 1, 5, float("inf"))  # ms
    histogram = {f"<{b:g}ms": 0.0 for b in edges}
    for gap in gaps:
        label = next(f"<{b:g}ms" for b in edges if gap / 1000 < b)
        histogram[label] += gap / 1000
    ranked = sorted(by_name.items(), key=lambda item: -item[1][1])
    return {"span_ms": round(span_ms, 1), "busy": round(busy / 1000 / span_ms, 3),
            "idle_ms_by_gap_length": {k: round(v, 1) for k, v in histogram.items()},
            "gpu_ms_by_stream": {k: round(v / 1000, 1) for k, v in sorted(by_stream.items(), key=lambda i: -i[1])},
            "kernels": [{"name": n, "count": c, "ms": round(t / 1000, 2)} for n, (c, t) in ranked[:top]],
            "host_cuda_calls": [{"name": n, "count": c, "ms": round(t / 1000, 1)}
                                for n, (c, t) in sorted(host.items(), key=lambda i: -i[1][1])[:12]]}
