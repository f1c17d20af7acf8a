"""A `stages:` plugin for the `--gpus` test: the first frame of each stream writes, to `<directory>/<instance>.json`,
how many CUDA devices its process sees and device 0's PCI bus id."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.types import FrameResult


class ReportVisibleDevice:
    def __init__(self, stream_id: str, directory: str):
        self.stream_id, self.directory = stream_id, Path(directory)
        self.reported = False

    def __call__(self, result: FrameResult) -> list:
        if self.reported:
            return []
        import cupy  # noqa: PLC0415 - the GPU machine only

        report = {"stream_id": self.stream_id, "devices": cupy.cuda.runtime.getDeviceCount(),
                  "pci_bus_id": cupy.cuda.Device(0).pci_bus_id,
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        instance = os.environ["STREAMWEAVE_INSTANCE"]
        (self.directory / f"{instance}.json").write_text(json.dumps(report))
        self.reported = True
        return []
