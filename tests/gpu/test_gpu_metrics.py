"""GPU metrics through NVML on a real GPU: every device reported, and its memory in use follows an allocation."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from pipeline.service.gpu import GpuCollector

GIB = 1 << 30


def gpu_samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """`streamweave_gpu_<name>` per NVML index."""
    return {sample.labels["gpu"]: sample.value for family in registry.collect() for sample in family.samples
            if sample.name == f"streamweave_gpu_{name}"}


def test_every_gpu_reports_memory_and_utilisation_and_used_memory_grows_by_what_is_allocated():
    pynvml = pytest.importorskip("pynvml")
    import cupy  # noqa: PLC0415

    cupy.cuda.runtime.free(cupy.cuda.runtime.malloc(1))  # this process's CUDA context exists before "before"
    collector = GpuCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        before = gpu_samples(registry, "memory_used_bytes")
        block = cupy.cuda.runtime.malloc(2 * GIB)
        after = gpu_samples(registry, "memory_used_bytes")
        cupy.cuda.runtime.free(block)
        total = gpu_samples(registry, "memory_total_bytes")
        busy = gpu_samples(registry, "utilization_ratio")
        assert len(before) == pynvml.nvmlDeviceGetCount() >= 1
        assert before.keys() == after.keys() == total.keys() == busy.keys()
        assert sum(after.values()) - sum(before.values()) >= 2 * GIB
        assert all(0 < after[gpu] <= total[gpu] for gpu in total) and all(0 <= b <= 1 for b in busy.values())
    finally:
        collector.close()
    assert gpu_samples(registry, "memory_used_bytes") == {}  # closed: NVML released, nothing exported
