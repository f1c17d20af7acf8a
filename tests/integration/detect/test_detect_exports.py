"""Ultralytics exports made at test time: recognised from the file alone, run by `detect`, equal to PyTorch.

Each model is built from its yaml with random weights (seed 0; nothing is downloaded) and exported
dynamic and static, simplified (onnxslim) and not, once per session. Random weights: the point is the
file layouts, not the detections. `ultralytics` is a test-only dependency (AGPL) that `pipeline/`
never imports.
"""
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect import preprocess
from pipeline.detect.detector import Detector
from pipeline.detect.offline import detect_command
from pipeline.errors import ConfigError
from tests.conftest import shared_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="needs the test extra's ultralytics"),
]

SIZE = 320
MODELS = {  # yaml -> (export arguments, head, output columns)
    "yolov8n": ({}, "ultralytics", 84),
    "yolo11n": ({}, "ultralytics", 84),
    "yolov10n": ({"nms": False}, "end2end", 6),  # the NMS-free one-to-one head, as YOLOv10 is meant to run
    "yolo26n": ({"nms": False}, "end2end", 6),
    "rtdetr-l": ({}, "rtdetr", 6),
}
NOT_DETECTION = ("yolo11n-seg", "yolo11n-pose", "yolo11n-obb")  # exported like the others, refused
VARIANTS = {
    "dynamic": {"dynamic": True, "simplify": False},
    "dynamic-simplified": {"dynamic": True, "simplify": True},
    "static": {"dynamic": False, "simplify": False},
    "static-simplified": {"dynamic": False, "simplify": True},
}
CASES = [(m, v) for m in MODELS for v in VARIANTS]


@dataclass
class Export:
    path: Path
    network: Any  # the PyTorch model it was exported from (eval mode)


class Exports:
    """Exports made on first use and kept for the session, in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._networks: dict[str, Any] = {}
        self._files: dict[tuple[str, str], Path] = {}

    def get(self, model: str, variant: str) -> Export:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("YOLO_OFFLINE", "1")  # read when ultralytics is first imported: no network, no downloads
            patch.setenv("YOLO_AUTOINSTALL", "0")
            patch.setenv("YOLO_CONFIG_DIR", str(self.folder / "settings"))
            patch.chdir(self.folder)  # a model built from a yaml is exported to the working folder
            if model not in self._networks:
                self._networks[model] = _build(model)
            if (model, variant) not in self._files:
                wrapper = self._networks[model]
                arguments = {**MODELS.get(model, ({},))[0], **VARIANTS[variant]}
                exported = wrapper.export(format="onnx", imgsz=SIZE, verbose=False, **arguments)
                self._files[model, variant] = Path(exported).rename(self.folder / f"{model}-{variant}.onnx")
        network = self._networks[model].model.eval()
        network.end2end = MODELS.get(model, ({},))[0].get("nms") is False  # the head the export kept
        return Export(self._files[model, variant], network)


def _build(model: str):
    import torch  # noqa: PLC0415 - the test extra's; imported only when an export is made
    from ultralytics import RTDETR, YOLO  # noqa: PLC0415

    torch.manual_seed(0)
    return (RTDETR if model.startswith("rtdetr") else YOLO)(f"{model}.yaml")


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("ultralytics-exports"))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Two real 768x432 frames (RGB)."""
    with av.open(str(shared_file("media/person-bicycle-car-detection.mp4"))) as container:
        decoded = (f.to_ndarray(format="rgb24") for f in container.decode(video=0))
        return [next(decoded), next(decoded)]


def _detector(path: Path) -> Detector:
    return Detector(DetectorConfig(model=path, engine="onnxruntime", conf_threshold=0.01), max_batch=2)


@pytest.mark.parametrize("model, variant", CASES)
def test_an_ultralytics_export_is_recognised_from_the_file_alone(exports, model, variant):
    """No `head`, no `input_size`: a dynamic export's size comes from its `imgsz` metadata."""
    detector = _detector(exports.get(model, variant).path)
    try:
        assert (detector.head, detector.input_size) == (MODELS[model][1], (SIZE, SIZE))
        assert detector.class_names == [str(i) for i in range(80)]  # a yaml-built model's names, from the metadata
    finally:
        detector.close()


@pytest.mark.parametrize("model", NOT_DETECTION)
def test_segment_pose_and_obb_exports_are_refused_as_detection_only(exports, model):
    with pytest.raises(ConfigError, match="detection models only"):
        _detector(exports.get(model, "dynamic").path)


@pytest.mark.parametrize("model, variant", CASES)
def test_onnx_runtime_gives_what_pytorch_gives_on_the_same_input(exports, model, variant, frames):
    """The raw output ONNX Runtime computes from the detector's own preprocessed input equals the PyTorch
    model's. End-to-end heads keep the top 300 of random scores that differ in the fifth digit, so their
    order is float noise: there the sorted scores are compared."""
    import torch  # noqa: PLC0415

    export = exports.get(model, variant)
    detector = _detector(export.path)
    try:
        batch = preprocess.allocate(len(frames), detector.spec)
        preprocess.preprocess_into(frames, detector.spec, batch)
        name = detector.signature.inputs[0].name  # a static export takes one image at a time
        ours = np.concatenate([detector.engine.infer({name: batch[i : i + 1]})["output0"] for i in range(len(batch))])
    finally:
        detector.close()
    with torch.no_grad():
        theirs = export.network(torch.from_numpy(batch.copy()))
    theirs = (theirs[0] if isinstance(theirs, (tuple, list)) else theirs).numpy()
    assert ours.shape == theirs.shape and MODELS[model][2] in ours.shape[1:]
    if MODELS[model][1] == "rtdetr":  # (cx, cy, w, h) as fractions of the input
        assert 0 <= ours[..., :4].min() and ours[..., :4].max() <= 1
    if MODELS[model][1] != "ultralytics":
        ours, theirs = np.sort(ours[..., 4], axis=1), np.sort(theirs[..., 4], axis=1)
    np.testing.assert_allclose(ours, theirs, atol=1e-3 * max(1.0, float(np.abs(theirs).max())), rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", MODELS)
def test_the_detect_command_runs_every_export_and_dynamic_equals_static(exports, model, variant, frames, tmp_path):
    """At --conf 0 every candidate counts (random weights score near 0); each variant finds what the static
    unsimplified export finds."""
    images = [tmp_path / f"{i}.png" for i in range(len(frames))]
    for path, image in zip(images, frames):
        av.VideoFrame.from_ndarray(image, format="rgb24").to_image().save(path)
    rows = _detect(exports.get(model, variant).path, images, tmp_path / "results.json")
    assert rows and {r["image_id"] for r in rows} <= {0, 1}
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 768.01 for r in rows)
    assert len(rows) == len(_detect(exports.get(model, "static").path, images, tmp_path / "static.json"))


def _detect(model: Path, images: list[Path], out: Path) -> list[dict]:
    """`run_pipeline.py detect` at --conf 0 on ONNX Runtime; its COCO result rows."""
    argv = ["--model", str(model), "--engine", "onnxruntime", "--conf", "0", "--out", str(out), *map(str, images)]
    assert detect_command(argv) == 0
    return json.loads(out.read_text())
