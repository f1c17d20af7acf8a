"""The torch engine on CUDA runs every Ultralytics layout and computes what ONNX Runtime computes on the CPU.

The models come from `scripts/export_gpu_models.py parity` (the GPU machine has no ultralytics), unpacked into
`.device/exports/` (or $STREAMWEAVE_EXPORTS): YOLOv8n, YOLO11n, YOLOv10n, YOLO26n, RT-DETR-L at 320, dynamic and
not simplified, YOLO11n static-simplified and as TorchScript. Random (quantized) weights: the outputs are
compared, not the detections. End-to-end heads keep the top 300 of scores that tie in the fifth digit, so
their sorted scores are compared (which box is 300th is float noise).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.detect.engines.torch_engine import TorchEngine
from tests.gpu.helpers import REPO, gpu_file
from tests.support.frames import letterboxed

SIZE = 320
ONNX = {  # file -> head
    "yolov8n-320-dynamic.onnx": "ultralytics",
    "yolo11n-320-dynamic.onnx": "ultralytics",
    "yolo11n-320-static-simplified.onnx": "ultralytics",
    "yolov10n-320-dynamic.onnx": "end2end",
    "yolo26n-320-dynamic.onnx": "end2end",
    "rtdetr-l-320-dynamic.onnx": "rtdetr",
}
TOLERANCE = {"fp32": 2e-3, "fp16": 2e-2}  # of the output's largest magnitude (boxes in pixels, up to ~SIZE)


def export_file(name: str):
    path = Path(os.environ.get("STREAMWEAVE_EXPORTS") or REPO / ".device" / "exports") / name
    if not path.exists():
        pytest.skip(f"{path} is absent: run scripts/export_gpu_models.py parity on a CPU machine and carry it")
    return path


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two real frames letterboxed to (2, 3, SIZE, SIZE) float32 RGB / 255."""
    return letterboxed(gpu_file("media/person-bicycle-car-detection.mp4"), SIZE)


def _ort(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if isinstance(session.get_inputs()[0].shape[0], int):  # a static export: one image at a time
        return np.concatenate([session.run(None, {"images": x[i : i + 1]})[0] for i in range(len(x))])
    return session.run(None, {"images": x})[0]


def _engine_output(path, precision: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    engine = TorchEngine(path, DetectorConfig(model=path, precision=precision), max_batch=4)
    try:
        rows = [engine.infer({"images": x[i : i + engine.max_batch]}) for i in range(0, len(x), engine.max_batch)]
        with engine.stream:
            out = np.concatenate([next(iter(r.values())).get() for r in rows])
        return out, engine.graph_status
    finally:
        engine.close()


def _difference(head: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    if head != "ultralytics":
        ours, theirs = np.sort(ours[..., 4], axis=1), np.sort(theirs[..., 4], axis=1)
    return float(np.abs(ours - theirs).max())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ONNX)
def test_the_torch_engine_on_cuda_computes_what_onnx_runtime_computes(name, precision, images, report):
    path = export_file(name)
    theirs = _ort(path, images)
    ours, graphs = _engine_output(path, precision, images)
    assert ours.shape == theirs.shape
    difference = _difference(ONNX[name], ours, theirs)
    scale = max(1.0, float(np.abs(theirs).max()))
    report(f"torch_cuda_vs_ort[{name},{precision}]", max_abs=difference, relative=difference / scale, graph=graphs)
    assert graphs == "cuda graphs", graphs  # each bucket's copy has its shapes folded (fx_specialize)
    assert difference <= TOLERANCE[precision] * scale


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_torchscript_export_runs_on_cuda_like_its_onnx_twin(precision, images, report):
    """Same weights (the exporter quantized them before both exports), so the same outputs."""
    ours, graphs = _engine_output(export_file("yolo11n-320.torchscript"), precision, images)
    theirs = _ort(export_file("yolo11n-320-dynamic.onnx"), images)
    difference = _difference("ultralytics", ours, theirs)
    scale = max(1.0, float(np.abs(theirs).max()))
    report(f"torchscript_cuda_vs_onnx_ort[{precision}]", max_abs=difference, graph=graphs)
    assert difference <= TOLERANCE[precision] * scale


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_torch_export_program_made_here_runs_on_cuda_like_on_the_cpu(precision, images, tmp_path_factory, report):
    """A `.pt2` must be made with the torch that loads it, so it is exported here (ultralytics from the test extra,
    YOLO11n from its yaml), then the engine's CUDA output is compared with the program itself on the CPU."""
    pytest.importorskip("ultralytics")
    import torch

    from tests.support.ultralytics_exports import Exports

    path = Exports(tmp_path_factory.mktemp("pt2")).get("yolo11n", "pt2").path
    with torch.no_grad():
        theirs = torch.export.load(str(path)).module()(torch.from_numpy(images))
    theirs = (theirs[0] if isinstance(theirs, (tuple, list)) else theirs).numpy()
    ours, graphs = _engine_output(path, precision, images)
    assert ours.shape == theirs.shape
    difference = _difference("ultralytics", ours, theirs)
    scale = max(1.0, float(np.abs(theirs).max()))
    report(f"pt2_cuda_vs_cpu[{precision}]", max_abs=difference, relative=difference / scale, graph=graphs)
    assert difference <= TOLERANCE[precision] * scale


@pytest.mark.parametrize("name", [*ONNX, "yolo11n-320.torchscript"])
def test_the_gpu_detector_finds_boxes_in_source_pixels_with_every_layout(name):
    """No head, no input_size in the config; at conf 0 (random weights score near 0) every layout gives boxes,
    through the fused kernel or (RT-DETR's normalised boxes) the general path."""
    import av

    path = export_file(name)
    with av.open(str(gpu_file("media/person-bicycle-car-detection.mp4"))) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), container.decode(video=0))]
    detector = Detector(DetectorConfig(model=path, engine="torch", conf_threshold=0.0, max_detections=50), max_batch=4)
    try:
        found, _, _ = detector.detect_images(frames)
    finally:
        detector.close()
    assert detector.input_size == (SIZE, SIZE) and detector.head == (ONNX.get(name) or "ultralytics")
    assert sorted(set(found.frame_idx.tolist())) == [0, 1, 2] and len(found) == 150
    assert found.xyxy.min() >= 0 and found.xyxy[:, 2].max() <= 768 and found.xyxy[:, 3].max() <= 432
