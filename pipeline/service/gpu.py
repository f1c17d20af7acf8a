"""GPU memory and utilisation for the metrics scrape, through NVML (`nvidia-ml-py`, in the `gpu` extra).

Where the library, the NVIDIA driver or a GPU is missing, no GPU metric is exported (said once, at debug
level): a CPU deployment scrapes the same endpoint without them.
"""
from __future__ import annotations

import logging
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

PREFIX = "streamweave_gpu"


class GpuCollector:
    """A `prometheus_client` collector: per GPU of the host (label `gpu`, its NVML index, and `name`) the
    memory used and total in bytes and the fraction of the last sample period a kernel ran (0 to 1).

    NVML is started at the first scrape and kept until `close()`.
    """

    def __init__(self):
        self._nvml = None
        self._devices: list[tuple[list[str], object]] | None = None  # None: not looked for yet

    def collect(self) -> Iterator[Metric]:
        if self._devices is None:
            self._devices = self._start()
        if not self._devices:
            return
        nvml = self._nvml
        used = _gauge("memory_used_bytes", "GPU memory in use, by every process")
        total = _gauge("memory_total_bytes", "GPU memory on the device")
        busy = _gauge("utilization_ratio", "fraction of the last sample period in which a kernel ran on the GPU")
        for labels, handle in self._devices:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            except nvml.NVMLError as exc:  # a GPU that fell off the bus: the others are still reported
                log.debug("GPU %s: NVML cannot read it (%s); left out of this scrape", labels[0], exc)
                continue
            used.add_metric(labels, memory.used)
            total.add_metric(labels, memory.total)
            busy.add_metric(labels, rates.gpu / 100)
        yield from (used, total, busy)

    def close(self) -> None:
        """Stop NVML if a scrape started it."""
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None
        self._devices = []

    def _start(self) -> list[tuple[list[str], object]]:
        try:
            import pynvml  # noqa: PLC0415 - optional (the gpu extra), loaded at the first scrape
        except ImportError:
            log.debug("no GPU metrics: nvidia-ml-py is not installed (pip install 'streamweave[gpu]')")
            return []
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.debug("no GPU metrics: NVML is unavailable (%s)", exc)
            return []
        self._nvml = pynvml
        devices, why = [], "NVML sees no GPU"
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                devices.append(([str(index), pynvml.nvmlDeviceGetName(handle)], handle))
        except pynvml.NVMLError as exc:
            devices, why = [], f"NVML cannot list the GPUs ({exc})"
        if not devices:
            log.debug("no GPU metrics: %s", why)
            self.close()
        return devices


def _gauge(name: str, help_: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_, labels=["gpu", "name"])
