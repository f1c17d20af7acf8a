"""Ultralytics exports made at test time (tests/support/ultralytics_exports.py): recognised from the file alone, run
by `detect`, equal to PyTorch."""
import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect import preprocess
from pipeline.detect.detector import Detector
from pipeline.detect.offline import detect_command
from pipeline.errors import ConfigError
from tests.conftest import shared_file
from tests.support.ultralytics_exports import CASES, MODELS, NOT_DETECTION, SIZE, VARIANTS, needs_ultralytics

pytestmark = [pytest.mark.slow, needs_ultralytics]


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


@pytest.mark.parametrize("model", ["yolo11n", "yolo26n", "rtdetr-l"])
def test_a_dynamic_export_is_refused_at_load_an_input_size_its_strides_do_not_divide(exports, model, frames):
    """16:9 at 640 wide is 640x360, which the network's upsampled and strided feature maps (23 vs 24 rows) cannot
    join: every batch failed in the engine once the pipeline ran."""
    path = exports.get(model, "dynamic-simplified").path
    with pytest.raises(ConfigError, match=r"detector.input_size \[640, 360\].*multiples of 32.*\[640, 384\]"):
        Detector(DetectorConfig(model=path, engine="onnxruntime", input_size=(640, 360)))
    detector = Detector(DetectorConfig(model=path, engine="onnxruntime", input_size=(640, 384)))
    try:
        detector.detect_images(frames[:1])
    finally:
        detector.close()
