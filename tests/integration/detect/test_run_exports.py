"""`run_pipeline.py run` on a real clip with every Ultralytics export (tests/support/ultralytics_exports.py) on ONNX
Runtime, configured with the model file alone: no `head`, no `input_size`. The detections reach SQLite."""
import sqlite3
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, shared_file
from tests.support.ultralytics_exports import MODELS, SIZE, needs_ultralytics

pytestmark = [pytest.mark.slow, needs_ultralytics]

FPS = 3  # frames/s taken from the 30 fps, 3.2 s clip: ten frames a run keep the runs short
# Dynamic and static: the two input layouts. The simplified variants are the same graphs after ONNX Runtime's own
# optimisation; `detect` (test_detect_exports.py) and the torch conversion run all four.
RUN_CASES = [(m, v) for m in MODELS for v in ("dynamic", "static")]


@pytest.mark.parametrize("model, variant", RUN_CASES)
def test_run_stores_the_detections_of_every_export_configured_by_its_file_alone(exports, model, variant, tmp_path):
    """At conf_threshold 0 every candidate counts: random weights score near 0, and the point is that each layout
    runs through the whole pipeline (decode, batches, engine, head, NMS, tracker, storage) into source pixels."""
    clip = shared_file("media/dog-848x464.mp4")
    database = tmp_path / "detections.db"
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": "dog", "url": str(clip), "fps": FPS}],
        "detector": {"model": str(exports.get(model, variant).path), "engine": "onnxruntime", "conf_threshold": 0.0,
                     "max_detections": 20},
        "sinks": [{"type": "sqlite", "path": str(database)}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    }))
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "run", str(config), "--quiet", "--duration", "120"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(database) as db:
        frames, rows = db.execute("SELECT COUNT(DISTINCT seq), COUNT(*) FROM detections WHERE stream_id = 'dog'").fetchone()
        names = {name for (name,) in db.execute("SELECT DISTINCT class_name FROM detections")}
        x1, x2, y2 = db.execute("SELECT MIN(x1), MAX(x2), MAX(y2) FROM detections").fetchone()
    assert frames >= 8 and rows == 20 * frames  # every frame, each with max_detections boxes
    assert names <= {str(i) for i in range(80)}  # the file's metadata names its classes "0".."79" (not COCO's)
    assert 0 <= x1 and x2 <= 848 and y2 <= 464  # source pixels of the 848x464 clip, not the model's SIZE
    assert (x2, y2) != (SIZE, SIZE)
