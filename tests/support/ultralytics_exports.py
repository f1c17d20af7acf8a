"""Ultralytics models built at test time and exported the ways users export them, once per session.

Each model is built from its yaml with random weights (seed 0; nothing is downloaded) and exported to
ONNX dynamic and static, simplified (onnxslim) and not; YOLO11n and RT-DETR-L also to TorchScript, and
YOLO11n to torch.export (`.pt2`). Random weights: the point is the file layouts, not the detections.
`ultralytics` is a test-only dependency (AGPL) that `pipeline/` never imports.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
TORCHSCRIPT_MODELS = ("yolo11n", "rtdetr-l")

needs_ultralytics = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                       reason="needs the test extra's ultralytics")


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
        """`variant`: a key of VARIANTS, "torchscript" or "pt2"."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("YOLO_OFFLINE", "1")  # read when ultralytics is first imported: no network, no downloads
            patch.setenv("YOLO_AUTOINSTALL", "0")
            patch.setenv("YOLO_CONFIG_DIR", str(self.folder / "settings"))
            patch.chdir(self.folder)  # a model built from a yaml is exported to the working folder
            if model not in self._networks:
                self._networks[model] = _build(model)
            if (model, variant) not in self._files:
                self._files[model, variant] = self._export(model, variant)
        network = self._networks[model].model.eval()
        network.end2end = MODELS.get(model, ({},))[0].get("nms") is False  # the head the export kept
        return Export(self._files[model, variant], network)

    def _export(self, model: str, variant: str) -> Path:
        wrapper = self._networks[model]
        if variant == "pt2":
            return _export_pt2(wrapper.model, self.folder / f"{model}.pt2")
        if variant == "torchscript":
            exported = wrapper.export(format="torchscript", imgsz=SIZE, verbose=False)
            return Path(exported).rename(self.folder / f"{model}.torchscript")
        arguments = {**MODELS.get(model, ({},))[0], **VARIANTS[variant]}
        exported = wrapper.export(format="onnx", imgsz=SIZE, verbose=False, **arguments)
        return Path(exported).rename(self.folder / f"{model}-{variant}.onnx")


def _build(model: str):
    import torch  # noqa: PLC0415 - the test extra's; imported only when an export is made
    from ultralytics import RTDETR, YOLO  # noqa: PLC0415

    torch.manual_seed(0)
    return (RTDETR if model.startswith("rtdetr") else YOLO)(f"{model}.yaml")


def _export_pt2(network, path: Path) -> Path:
    """torch.export of a YOLO with a dynamic batch and no metadata file: its input shape is all it says."""
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if hasattr(module, "export"):
            module.export = True  # the head's export form: one [B, 4+nc, N] tensor
        if hasattr(module, "dynamic"):
            module.dynamic = True  # anchors from the input's shape, so the batch is not specialised
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(network, (torch.zeros(2, 3, SIZE, SIZE),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return path


def torchvision_stand_in() -> None:
    """Make `import onnx2torch` work where torchvision cannot be imported.

    The CPU machines have torch's CPU build, and the registries only torchvision's CUDA build, which fails on
    import beside it (`operator torchvision::nms does not exist`). onnx2torch imports torchvision for its
    NonMaxSuppression and RoiAlign converters only, which none of the tested models has: a stand-in whose
    functions raise is put in its place. Where torchvision imports (the GPU machine) nothing changes.
    """
    try:
        import torchvision  # noqa: F401, PLC0415
    except (ImportError, RuntimeError, OSError):
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]

        def unavailable(*_args, **_kwargs):
            raise NotImplementedError("torchvision cannot be imported here")

        package, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.box_convert = ops.roi_align = unavailable
        package.ops = ops
        sys.modules.update({"torchvision": package, "torchvision.ops": ops})
