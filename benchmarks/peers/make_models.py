"""The peers' model: YOLO11n built from Ultralytics' yaml with a fixed seed (random weights, no download),
saved for each reader of it: yolo11n.pt (Ultralytics), yolo11n.torchscript (the typical script) and
yolo11n.onnx with a dynamic batch (streamweave), all at the same input size.

    python benchmarks/peers/make_models.py OUT_DIR [--imgsz 640]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from ultralytics import YOLO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.save(args.out / "yolo11n.pt")
    for fmt, suffix, options in (("torchscript", ".torchscript", {}), ("onnx", ".onnx", {"dynamic": True})):
        exported = Path(YOLO(args.out / "yolo11n.pt").export(format=fmt, imgsz=args.imgsz, **options))
        if exported.resolve() != (args.out / f"yolo11n{suffix}").resolve():
            shutil.move(exported, args.out / f"yolo11n{suffix}")
    print(sorted(p.name for p in args.out.iterdir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
