"""`run_pipeline.py detect` and `run` on the GPU machine with every Ultralytics export of
`scripts/export_gpu_models.py parity` on the torch engine, configured by the model file alone (no `head`, no
`input_size`); the CPU twins are tests/integration/detect/test_detect_exports.py and test_run_exports.py. Random
weights score near 0, so at conf 0 every candidate counts: the point is that each layout goes through the command,
on every frame ONNX Runtime's does, into source pixels."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest
import yaml

from tests.gpu.helpers import REPO, gpu_file
from tests.gpu.test_gpu_torch_exports import ONNX, export_file

EXPORTS = [*ONNX, "yolo11n-320.torchscript"]
ONNX_TWIN = {"yolo11n-320.torchscript": "yolo11n-320-dynamic.onnx"}  # ONNX Runtime reads ONNX only


def _command(*args: str, cwd) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("name", EXPORTS)
def test_the_detect_command_runs_every_export_on_the_torch_engine(name, tmp_path):
    """Every frame ONNX Runtime on the CPU gets (the ONNX file; the TorchScript's ONNX twin), each with --max-det boxes."""
    def detect(model, engine: str) -> list[dict]:
        out = tmp_path / f"{engine}.json"
        _command("detect", str(gpu_file("media/person-bicycle-car-detection.mp4")), "--model", str(model),
                 "--engine", engine, "--conf", "0", "--max-det", "20", "--fps", "3", "--out", str(out), cwd=tmp_path)
        return json.loads(out.read_text())

    rows = detect(export_file(name), "torch")
    theirs = detect(export_file(ONNX_TWIN.get(name, name)), "onnxruntime")
    frames = {row["image_id"] for row in rows}
    assert frames == {row["image_id"] for row in theirs} and len(frames) >= 100  # 115 frames at 3 of 12 fps
    assert len(rows) == 20 * len(frames)
    assert all(0 <= r["bbox"][0] and 0 <= r["bbox"][1] and r["bbox"][0] + r["bbox"][2] <= 768.01
               and r["bbox"][1] + r["bbox"][3] <= 432.01 for r in rows)


@pytest.mark.parametrize("name", EXPORTS)
def test_run_stores_the_detections_of_every_export_on_the_torch_engine(name, tmp_path):
    """The frames ONNX Runtime's run stores, each with max_detections boxes in the clip's pixels, named by the file."""
    def run(model, engine: str) -> sqlite3.Connection:
        folder = tmp_path / engine
        folder.mkdir()
        config = folder / "site.yaml"
        config.write_text(yaml.safe_dump({
            "streams": [{"id": "dog", "url": str(gpu_file("media/dog-848x464.mp4")), "fps": 3}],
            "detector": {"model": str(model), "engine": engine, "conf_threshold": 0.0, "max_detections": 20},
            "sinks": [{"type": "sqlite", "path": str(folder / "detections.db")}],
            "runtime": {"outbox_path": str(folder / "outbox.db")},
        }))
        _command("run", str(config), "--quiet", "--duration", "120", cwd=folder)
        return sqlite3.connect(folder / "detections.db")

    frames_of = "SELECT DISTINCT seq FROM detections WHERE stream_id = 'dog' ORDER BY seq"
    with closing(run(export_file(name), "torch")) as db, closing(run(export_file(ONNX_TWIN.get(name, name)),
                                                                      "onnxruntime")) as theirs:
        frames = db.execute(frames_of).fetchall()
        assert frames == theirs.execute(frames_of).fetchall() and len(frames) >= 8
        assert db.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 20 * len(frames)
        names = {name for (name,) in db.execute("SELECT DISTINCT class_name FROM detections")}
        x1, y1, x2, y2 = db.execute("SELECT MIN(x1), MIN(y1), MAX(x2), MAX(y2) FROM detections").fetchone()
    assert names <= {str(i) for i in range(80)}  # the file's metadata names its classes "0".."79" (not COCO's)
    assert 0 <= x1 and 0 <= y1 and x2 <= 848 and y2 <= 464
