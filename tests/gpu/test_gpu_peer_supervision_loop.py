"""The supervision + ByteTrack peer (benchmarks/peers/supervision_loop.py) through the peers harness on the GPU:
one paced camera from the feeder, a YOLO11n of random weights built from Ultralytics' yaml, and the harness's
verdict and latencies from the peer's own record. A GPU test because Ultralytics' NMS needs torchvision's
compiled operators, which a CPU-only torch with the default (CUDA) torchvision wheel does not load; the GPU
machine needs ultralytics and supervision on its path (bench extras, as for the other peers)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.helpers import gpu_file

ultralytics = pytest.importorskip("ultralytics")
pytest.importorskip("supervision")


def test_one_slow_camera_is_kept_up_with_and_every_frame_of_the_window_is_timed(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    torch.manual_seed(0)
    model = tmp_path / "yolo11n.pt"
    ultralytics.YOLO("yolo11n.yaml").save(model)
    out = tmp_path / "peers"
    harness = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
    subprocess.run([sys.executable, str(harness), "--peer", "supervision_loop", "--model", str(model),
                    "--clip", str(gpu_file("media/car-detection.mp4")), "--size", "640x360", "--fps", "10",
                    "--clip-seconds", "4", "--imgsz", "320", "--device", "cuda", "--start", "1", "--max", "1",
                    "--window-s", "4", "--warmup-s", "15", "--bound-ms", "5000", "--out", str(out)],
                   check=True, timeout=240, env={**os.environ, "YOLO_OFFLINE": "1"})
    report = json.loads((out / "supervision_loop.json").read_text())
    step = report["steps"][0]
    assert report["cameras_in_real_time"] == 1 and step["holds"], step["reasons"]
    assert step["frames"] >= 4 * 10 - 1  # the window's frames, each processed once
    assert 0 < step["p50"] <= step["p99"] < 5000
    record = json.loads((out / "supervision_loop-1.json").read_text())
    assert record["errors"] == []
