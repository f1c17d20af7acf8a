"""`run --gpus all` on the GPU machine: one child per GPU, each seeing exactly one CUDA device, the GPU that NVML
numbers as its index (so NVDEC, kernels and the engine all run there), stopped together by SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.runtime.placement import shard_of
from tests.gpu.helpers import REPO, gpu_file
from tests.support.http_server import free_port


def bus(pci_bus_id: str) -> str:
    """`00000000:1B:00.0` (NVML) and `0000:1b:00.0` (CUDA) -> `1B:00.0`."""
    return pci_bus_id.split(":", 1)[1].upper()


def nvml_buses(pynvml) -> list[str]:
    """The PCI bus of each GPU, by NVML index."""
    pynvml.nvmlInit()
    try:
        ids = [pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).busId
               for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()
    return [bus(i.decode() if isinstance(i, bytes) else i) for i in ids]


def test_gpus_all_starts_one_instance_per_gpu_each_seeing_only_its_own(tmp_path):
    buses = nvml_buses(pytest.importorskip("pynvml"))
    count = len(buses)
    clip = gpu_file("media/car-detection.mp4")
    ids = []
    for i in range(1000):  # at least one camera of every child's shard
        if len({shard_of(c, count) for c in ids}) == count:
            break
        ids.append(f"clip-{i}")
    config = tmp_path / "site.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "streams": [{"id": cam, "url": str(clip), "loop": True, "decode": "nvdec"} for cam in ids],
        "detector": {"model": str(gpu_file("models/yolox_nano_416_dynbatch.onnx")), "engine": "torch"},
        "stages": [{"python": "tests.gpu.visible_device:ReportVisibleDevice", "options": {"directory": str(tmp_path)}}],
        "runtime": {"instance": "gpu-test", "outbox_path": str(tmp_path / "outbox.db")},
    }))
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    supervisor = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "run", str(config), "--gpus", "all",
                                   "--port", str(free_port()), "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    reports = [tmp_path / f"gpu-test-gpu{k}.json" for k in range(count)]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and supervisor.poll() is None and not all(r.exists() for r in reports):
            time.sleep(0.5)  # other processes: nothing to be notified by
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, err = supervisor.communicate(timeout=120)
    assert all(r.exists() for r in reports), err[-4000:]
    assert supervisor.returncode == 0, err[-4000:]
    for k, path in enumerate(reports):
        seen = json.loads(path.read_text())
        assert seen["devices"] == 1 and seen["cuda_visible_devices"] == str(k)
        assert bus(seen["pci_bus_id"]) == buses[k]  # CUDA's only device is NVML's GPU k
