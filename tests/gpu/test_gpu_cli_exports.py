"""`run_pipeline.py detect` and `run` on the GPU machine with every carried Ultralytics export on the torch engine,
configured by the model file alone (no `head`, no `input_size`); the CPU twins are
tests/integration/detect/test_detect_exports.py and test_run_exports.py. Random weights score near 0, so at
conf 0 every candidate counts: the point is that each layout goes through the command into source pixels."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from tests.gpu.helpers import REPO, gpu_file
from tests.gpu.test_gpu_torch_exports import ONNX, export_file

EXPORTS = [*ONNX, "yolo11n-320.torchscript"]


def _command(*args: str, cwd) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("name", EXPORTS)
def test_the_detect_command_runs_every_export_on_the_torch_engine(name, tmp_path):
    out = tmp_path / "results.json"
    _command("detect", str(gpu_file("media/person-bicycle-car-detection.mp4")), "--model", str(export_file(name)),
             "--engine", "torch", "--conf", "0", "--max-det", "20", "--fps", "3", "--out", str(out), cwd=tmp_path)
    rows = json.loads(out.read_text())
    frames = {row["image_id"] for row in rows}
    assert len(frames) >= 8 and len(rows) == 20 * len(frames)
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 768.01 and r["bbox"][1] + r["bbox"][3] <= 432.01
               for r in rows)


@pytest.mark.parametrize("name", EXPORTS)
def test_run_stores_the_detections_of_every_export_on_the_torch_engine(name, tmp_path):
    database = tmp_path / "detections.db"
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": "dog", "url": str(gpu_file("media/dog-848x464.mp4")), "fps": 3}],
        "detector": {"model": str(export_file(name)), "engine": "torch", "conf_threshold": 0.0, "max_detections": 20},
        "sinks": [{"type": "sqlite", "path": str(database)}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    }))
    _command("run", str(config), "--quiet", "--duration", "120", cwd=tmp_path)
    with sqlite3.connect(database) as db:
        frames, rows = db.execute("SELECT COUNT(DISTINCT seq), COUNT(*) FROM detections WHERE stream_id = 'dog'").fetchone()
        x1, x2, y2 = db.execute("SELECT MIN(x1), MAX(x2), MAX(y2) FROM detections").fetchone()
    assert frames >= 8 and rows == 20 * frames
    assert 0 <= x1 and x2 <= 848 and y2 <= 464
