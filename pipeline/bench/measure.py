"""What a benchmark window reads: latency histograms' counts over the window, CPU time of this process and
its decode processes, and the GPU's utilisation, memory and NVDEC load (NVML, when present)."""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import defaultdict
from pathlib import Path

log = logging.getLogger(__name__)


class HistogramWindow:
    """A labelled `prometheus_client` Histogram's cumulative bucket counts per label value, taken now;
    `since(earlier)` gives the observations made in between."""

    def __init__(self, histogram, label: str = "lane"):
        self.buckets: dict[str, dict[float, float]] = defaultdict(dict)
        for metric in histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    self.buckets[sample.labels[label]][float(sample.labels["le"])] = sample.value

    def since(self, earlier: HistogramWindow) -> dict[str, list[tuple[float, float]]]:
        """Per label value: (upper bound, cumulative count) of the observations after `earlier`, by bound."""
        out = {}
        for key, counts in self.buckets.items():
            before = earlier.buckets.get(key, {})
            out[key] = sorted((le, n - before.get(le, 0.0)) for le, n in counts.items())
        return out


def quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram window, interpolated inside its bucket as Prometheus'
    `histogram_quantile` does; inf when it lies beyond the last finite bound; None without observations."""
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside if inside else 1.0)
        lower_bound, lower_count = bound, count
    return math.inf


def share_within(cumulative: list[tuple[float, float]], bound: float) -> float | None:
    """The share of observations at or below `bound`, which must be one of the histogram's bucket bounds."""
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    counts = dict(cumulative)
    if bound not in counts:
        raise ValueError(f"{bound} is not a bucket bound of this histogram ({sorted(counts)})")
    return counts[bound] / total


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (this one by default) and every process below it (decode
    processes), from /proc; children that already exited are not counted."""
    root = pid or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for process, seconds in times.items():
        ancestor = process
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += seconds
    return total


class GpuSampler:
    """Samples one GPU through NVML every `interval_s` on a thread: kernel utilisation, memory used and
    NVDEC utilisation. Without NVML (`nvidia-ml-py`) or a GPU, `summary()` is empty."""

    def __init__(self, device: int = 0, interval_s: float = 0.5):
        self._device, self._interval = device, interval_s
        self._samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None

    def start(self) -> GpuSampler:
        try:
            import pynvml  # noqa: PLC0415 - optional (the gpu extra)

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self._device)
        except Exception as exc:  # noqa: BLE001 - ImportError or any NVMLError: no GPU figures
            log.info("no GPU figures in this benchmark (%s)", exc)
            return self
        self._nvml = pynvml
        self._thread = threading.Thread(target=self._run, args=(handle,), name="bench:gpu", daemon=True)
        self._thread.start()
        return self

    def _run(self, handle) -> None:
        nvml = self._nvml
        while not self._stop.wait(self._interval):
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            decoder, _period = nvml.nvmlDeviceGetDecoderUtilization(handle)
            self._samples.append((rates.gpu / 100, memory.used / 2**30, decoder / 100))

    def mark(self) -> int:
        """A position in the samples, for `summary(since=...)`."""
        return len(self._samples)

    def summary(self, since: int = 0) -> dict:
        """Mean kernel and NVDEC utilisation (0..1) and the largest memory used (GiB) since `since`."""
        samples = self._samples[since:]
        if not samples:
            return {}
        busy, memory, nvdec = zip(*samples, strict=True)
        return {"gpu_utilisation": round(sum(busy) / len(busy), 3), "gpu_memory_gib": round(max(memory), 2),
                "nvdec_utilisation": round(sum(nvdec) / len(nvdec), 3)}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._nvml.nvmlShutdown()
