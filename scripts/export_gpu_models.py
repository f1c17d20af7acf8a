"""Export the models the GPU tests and the heavy-model benchmark run, into one archive to carry to a GPU machine
that has no `ultralytics` (AGPL, a test extra here; `pipeline/` never imports it).

    .venv/bin/python scripts/export_gpu_models.py parity    # -> .device/exports-parity.tar.xz
    .venv/bin/python scripts/export_gpu_models.py bench     # -> .device/exports-bench.tar.xz
    .venv/bin/python scripts/export_gpu_models.py peers     # -> .device/exports-peers.tar.xz
    # on the GPU machine, from the repository root:
    tar -xJf .device/exports-parity.tar.xz -C .device      # -> .device/exports/*.onnx, *.torchscript

parity (tests/gpu/test_gpu_torch_exports.py): YOLOv8n, YOLO11n, YOLOv10n, YOLO26n and RT-DETR-L at 320,
dynamic and not simplified (the hardest case for onnx2torch), YOLO11n also static and simplified, and
YOLO11n as TorchScript. bench (benchmarks/heavy_models.py): YOLO11s and YOLO11m at 640, dynamic ONNX. peers
(benchmarks/peers.py and `run_pipeline.py bench`): YOLO11n at 640, dynamic ONNX for the pipeline and TorchScript
for the peers.

Every model is built from its yaml with random weights (seed 0, nothing downloaded). Random float32 weights
hardly compress, and the archives must fit the few tens of MB a GPU machine takes along, so each weight
tensor is rounded to 4 evenly spaced values (keeping its mean and spread) before export: the network, its
layers and its speed are unchanged, and its outputs are as good as random ones for checking that two
engines compute the same thing. Sizes are printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {  # name -> [(yaml, imgsz, export arguments, file name)]
    "parity": [
        *[(m, 320, {"dynamic": True, "simplify": False, **extra}, f"{m}-320-dynamic.onnx")
          for m, extra in (("yolov8n", {}), ("yolo11n", {}), ("yolov10n", {"nms": False}), ("yolo26n", {"nms": False}),
                           ("rtdetr-l", {}))],
        ("yolo11n", 320, {"dynamic": False, "simplify": True}, "yolo11n-320-static-simplified.onnx"),
        ("yolo11n", 320, {"format": "torchscript"}, "yolo11n-320.torchscript"),
    ],
    "bench": [(m, 640, {"dynamic": True, "simplify": True}, f"{m}-640-dynamic.onnx") for m in ("yolo11s", "yolo11m")],
    "peers": [("yolo11n", 640, {"dynamic": True, "simplify": True}, "yolo11n-640-dynamic.onnx"),
              ("yolo11n", 640, {"format": "torchscript"}, "yolo11n-640.torchscript")],
}
LEVELS = 4


def quantize_weights(network, levels: int = LEVELS) -> None:
    """Round every floating parameter and buffer with at least 64 values to `levels` evenly spaced values
    between its own min and max, then map them back to the tensor's own mean and standard deviation, in place:
    the exports compress (see the module docstring) and activations keep their scale layer after layer
    (coarse levels alone widen each layer's spread, which over dozens of layers overflows FP16)."""
    import torch  # noqa: PLC0415

    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            if not tensor.is_floating_point() or tensor.numel() < 64:
                continue
            low, high = tensor.min(), tensor.max()
            if high > low:
                step = (high - low) / (levels - 1)
                rounded = low + torch.round((tensor - low) / step) * step
                spread = rounded.std()
                if spread > 0:
                    rounded = tensor.mean() + (rounded - rounded.mean()) * (tensor.std() / spread)
                tensor.copy_(rounded)


def export(name: str, out: Path) -> Path:
    """The set `name` exported into `out`/exports/, then packed into `out`/exports-<name>.tar.xz."""
    os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0")  # read when ultralytics is imported: no downloads
    import torch  # noqa: PLC0415
    from ultralytics import RTDETR, YOLO  # noqa: PLC0415

    target = out / "exports"
    target.mkdir(parents=True, exist_ok=True)
    built: dict = {}
    with tempfile.TemporaryDirectory() as work:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(work) / "settings")
        os.chdir(work)  # a model built from a yaml exports beside the working folder
        for model, size, arguments, file_name in SETS[name]:
            if model not in built:
                torch.manual_seed(0)
                built[model] = (RTDETR if model.startswith("rtdetr") else YOLO)(f"{model}.yaml")
                quantize_weights(built[model].model)
            options = {"format": "onnx", **arguments}
            exported = built[model].export(imgsz=size, verbose=False, **options)
            shutil.move(exported, target / file_name)
            print(f"{file_name}: {(target / file_name).stat().st_size / 2**20:.1f} MiB", flush=True)
    archive = out / f"exports-{name}.tar.xz"
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for _, _, _, file_name in SETS[name]:
            tar.add(target / file_name, arcname=f"exports/{file_name}")
    print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB", flush=True)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=sorted(SETS), help="which models")
    parser.add_argument("--out", type=Path, default=REPO / ".device", help="folder for exports/ and the archive")
    args = parser.parse_args(argv)
    export(args.set, args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
