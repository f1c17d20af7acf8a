"""INT8 on the CPU: a model quantized with ONNX Runtime's static quantization (QDQ, per-channel weights),
calibrated on frames of real clips, against the FP32 model on other frames of the same clips: detections
(COCO-style mAP@0.5, the demo detector's metric, taking FP32's detections as ground truth) and images/s of each.

    .venv/bin/python benchmarks/int8_cpu.py [--model ../shared/models/yolox_nano_416_dynbatch.onnx]
        [--clips ../shared/media/car-detection.mp4 ...] [--every 10] [--method minmax|percentile|entropy]

Calibration takes the first half of each clip's sampled frames, the check the second half. The quantized file
is written beside the report (`--out`); the pipeline runs it like any ONNX file (`detector.model`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.models import DetectorConfig  # noqa: E402
from pipeline.detect import preprocess  # noqa: E402
from pipeline.detect.detector import Detector  # noqa: E402
from pipeline.types import Detections  # noqa: E402
from samples.world.metrics import ImageEval, mean_average_precision  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = ("car-detection.mp4", "person-bicycle-car-detection.mp4", "dashcam-highway-960x540.mp4",
         "one-by-one-person-detection.mp4")


def sampled_frames(clip: Path, every: int) -> list[np.ndarray]:
    """Every `every`-th frame of `clip`, RGB."""
    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % every == 0]


def map50(found: list[Detections], truth: list[Detections]) -> float:
    """COCO-style mAP@0.5 of `found` against `truth` (the demo's own metric), image by image."""
    images = [ImageEval(f.xyxy, f.score, f.class_id, t.xyxy, t.class_id, np.zeros(len(t.score), bool))
              for f, t in zip(found, truth, strict=True)]
    classes = 1 + max((int(c.max()) for c in (*(f.class_id for f in found), *(t.class_id for t in truth)) if len(c)), default=0)
    return mean_average_precision(images, classes)["map50"]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over preprocessed frames, one at a time."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self._items = iter({name: b} for b in batches)

    def get_next(self):
        return next(self._items, None)


def quantize(model: Path, out: Path, detector: Detector, images: list[np.ndarray], method: str,
             op_types: tuple[str, ...], float_convs: int) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    import onnx  # noqa: PLC0415
    from onnx import version_converter  # noqa: PLC0415

    proto = onnx.load(str(model))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    converted = out / f"{model.stem}-opset13.onnx"  # per-channel DequantizeLinear needs opset 13
    onnx.save(version_converter.convert_version(proto, 13) if opset < 13 else proto, str(converted))
    prepared = out / f"{model.stem}-prepared.onnx"
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)  # dynamic batch: ONNX shapes only
    batches = []
    for image in images:
        buffer = preprocess.allocate(1, detector.spec)
        preprocess.preprocess_into([image], detector.spec, buffer)
        batches.append(buffer)
    kept = _float_nodes(onnx.load(str(prepared)).graph, float_convs)
    target = out / f"{model.stem}-int8-{method}-float{float_convs}.onnx"
    quantize_static(str(prepared), str(target), _Calibration(detector.signature.inputs[0].name, batches),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=list(op_types) or None, nodes_to_exclude=kept,
                    weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                      "entropy": CalibrationMethod.Entropy}[method])
    return target


def _float_nodes(graph, first_convs: int) -> list[str]:
    """Nodes left in float: the first `first_convs` convolutions and everything before them (the stem, where
    8-bit activations cost most), and the nodes between the last convolutions and the outputs (sigmoids,
    concatenations of box offsets with scores, reshapes), as one 8-bit scale over pixels and probabilities
    together erases the scores."""
    convs = [i for i, node in enumerate(graph.node) if node.op_type == "Conv"]
    stem = [node.name for node in graph.node[: convs[first_convs - 1] + 1]] if first_convs else []
    producer = {out: node for node in graph.node for out in node.output}
    head, todo = {}, [producer[o.name] for o in graph.output if o.name in producer]
    while todo:
        node = todo.pop()
        if node.op_type == "Conv" or node.name in head:
            continue
        head[node.name] = node
        todo += [producer[i] for i in node.input if i in producer]
    return stem + list(head)


def detect_all(detector: Detector, images: list[np.ndarray], batch: int = 8) -> tuple[list[Detections], float]:
    """Per image its detections, and images/s of the whole (preprocess, engine, selection)."""
    per_image: list[Detections] = []
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        found, _, _ = detector.detect_images(images[i : i + batch])
        per_image += [found[found.frame_idx == k] for k in range(len(images[i : i + batch]))]
    return per_image, len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "yolox_nano_416_dynbatch.onnx")
    parser.add_argument("--clips", type=Path, nargs="+", default=[SHARED / "media" / c for c in CLIPS])
    parser.add_argument("--every", type=int, default=10, help="sample every n-th frame")
    parser.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    parser.add_argument("--ops", nargs="*", default=[],
                        help="operator types quantized (default: every one ONNX Runtime can); the head's decoding "
                             "after the last convolution always stays float")
    parser.add_argument("--float-convs", type=int, default=0, help="the first n convolutions stay float")
    parser.add_argument("--out", type=Path, default=Path("runs/int8"))
    args = parser.parse_args(argv)
    args.out, args.model = args.out.resolve(), args.model.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    calibration, check = [], []
    for clip in args.clips:
        frames = sampled_frames(clip, args.every)
        calibration += frames[: len(frames) // 2]
        check += frames[len(frames) // 2 :]
    fp32 = Detector(DetectorConfig(model=args.model, engine="onnxruntime"))
    with contextlib.chdir(args.out):  # ONNX Runtime's quantization leaves temporary files where it runs
        int8_path = quantize(args.model, args.out, fp32, calibration, args.method, tuple(args.ops), args.float_convs)
    int8 = Detector(DetectorConfig(model=int8_path, engine="onnxruntime"))
    for detector in (fp32, int8):  # both timed warm
        detect_all(detector, check[:8])
    truth, fp32_rate = detect_all(fp32, check)
    found, int8_rate = detect_all(int8, check)
    report = {"model": args.model.name, "method": args.method, "ops": args.ops, "float_convs": args.float_convs,
              "calibration_frames": len(calibration),
              "check_frames": len(check), "fp32_detections": sum(len(t.score) for t in truth),
              "int8_detections": sum(len(f.score) for f in found), "map50_vs_fp32": map50(found, truth),
              "fp32_images_per_s": fp32_rate, "int8_images_per_s": int8_rate, "int8_file": str(int8_path)}
    (args.out / f"int8-{args.method}-float{args.float_convs}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
