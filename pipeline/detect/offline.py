"""`run_pipeline.py detect`: run the detector over image and video files, write COCO results JSON.

    run_pipeline.py detect --model yolox_nano_416.onnx --out results.json img1.jpg clip.mp4
    run_pipeline.py detect --model m.onnx --fps 5 --out results.json clip.mp4
    run_pipeline.py detect --model m.onnx --coco-annotations instances_val2017.json --out r.json val2017/*.jpg

Without --coco-annotations, image ids number every picture of every input in order from 0, the video frames
`--fps` skips included, so a single video's image_id is its frame's index in presentation order (the MOT
export's frame number - 1), capped or not; category_id is the model's class id. With it, image ids come from
the annotation file's `file_name`s and category ids are the dataset's (matched by class name, so
COCO-80 models get COCO's 91-id scheme), ready for pycocotools.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pydantic import ValidationError

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.detect.heads import HEADS
from pipeline.errors import ConfigError, PipelineError, SourceError
from pipeline.fps_cap import FpsCap
from pipeline.types import PTS_UNKNOWN, pts_to_ns

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def build_parser(prog: str = "run_pipeline.py detect") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Detect objects in images and videos; write COCO results JSON.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files (jpg/png) and/or video files")
    p.add_argument("--model", required=True, type=Path, help="ONNX model file")
    p.add_argument("--out", required=True, type=Path, help="COCO results JSON to write")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (lower finds more, slower NMS)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    p.add_argument("--engine", default="auto", choices=["auto", "tensorrt", "torch", "onnxruntime-cuda", "onnxruntime"])
    p.add_argument("--head", default="auto", choices=["auto", *HEADS])
    p.add_argument("--batch", type=int, default=8, help="images per inference batch")
    p.add_argument("--fps", type=_rate, help="take at most this many frames per second of each video, as a stream's "
                   "fps cap does (fewer to detect; image ids stay the source's frame numbers)")
    p.add_argument("--classes", help="comma-separated class names to keep, e.g. person,car")
    p.add_argument("--coco-annotations", type=Path, help="COCO instances JSON: take image and category ids from it")
    return p


def detect_command(argv: list[str], prog: str = "run_pipeline.py detect") -> int:
    """Entry point of the `detect` subcommand (`prog`: the command as run); returns the process exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except PipelineError as exc:
        print(f"detect: {_as_options(str(exc))}", file=sys.stderr)
        return 2


def _rate(text: str) -> float:
    """--fps: frames per second above 0, as a stream's `fps` takes them."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is no frame rate: give frames per second above 0 (1000 at most), "
                                         "or leave --fps out to detect every frame")
    return value


_OPTIONS = {"model": "--model", "engine": "--engine", "head": "--head", "conf_threshold": "--conf",
            "iou_threshold": "--iou", "max_detections": "--max-det", "classes": "--classes", "max_batch": "--batch"}


def _as_options(message: str) -> str:
    """A detector's error as this command names its settings: `--model`, where a config says `detector.model`."""
    for key, option in _OPTIONS.items():
        message = re.sub(rf"\bdetector\.{key}\b", option, message)
    return message


def _detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The detector's settings from the options; ConfigError naming each option whose value is refused."""
    try:
        return DetectorConfig(
            model=args.model, engine=args.engine, head=args.head, conf_threshold=args.conf, iou_threshold=args.iou,
            max_detections=args.max_det, classes=args.classes.split(",") if args.classes else None,
            max_batch=args.batch,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError("\n".join(_refused(error, args) for error in exc.errors())) from None


def _refused(error: dict, args: argparse.Namespace) -> str:
    """`--batch 0: Input should be greater than or equal to 1`: the option, the value given, what is wrong."""
    option = _OPTIONS.get(error["loc"][0], str(error["loc"][0]))
    return f"{option} {getattr(args, option.lstrip('-').replace('-', '_'), '')}: {error['msg']}"


def _run(args: argparse.Namespace) -> int:
    config = _detector_config(args)
    _writable(args.out)
    detector = Detector(config, max_batch=args.batch)
    ids = CocoIds(args.coco_annotations, detector.class_names) if args.coco_annotations else None
    results: list[dict] = []
    images = 0
    started = time.perf_counter()
    try:
        for keys, numbers, frames in _batches(_frames(args.inputs, args.fps), args.batch):
            detections, _, _ = detector.detect_images(frames)
            for row, (key, number) in enumerate(zip(keys, numbers)):
                results.extend(_coco_rows(detections.for_frame(row), key, number, ids))
            images += len(frames)
    finally:
        detector.close()
    elapsed = time.perf_counter() - started
    try:
        args.out.write_text(json.dumps(results))
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: cannot be written ({exc.strerror}); give a writable path") from exc
    print(
        f"detect: {images} images, {len(results)} detections, {images / max(elapsed, 1e-9):.1f} img/s "
        f"({detector.engine_reason}) -> {args.out}"
    )
    return 0


def _writable(out: Path) -> None:
    """ConfigError naming --out when results cannot be written there: found before detecting, not after."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the path of the JSON file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: its folder cannot be made ({exc.strerror}); give a writable path") from exc


class CocoIds:
    """Image ids by file name and category ids by class name, from a COCO instances JSON."""

    def __init__(self, annotations: Path, class_names: list[str]):
        try:
            data = json.loads(annotations.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--coco-annotations '{annotations}' cannot be read as JSON ({exc})") from exc
        self.source = annotations
        self.image_ids = {Path(im["file_name"]).name: im["id"] for im in data.get("images", [])}
        by_name = {c["name"]: c["id"] for c in data.get("categories", [])}
        self.category_ids = np.asarray([by_name.get(n, -1) for n in class_names], np.int64)
        if not (self.category_ids >= 0).any():
            raise ConfigError(f"--coco-annotations '{annotations}': none of the model's class names is a category there")

    def image_id(self, key: str):
        name = Path(key).name
        if name not in self.image_ids:
            raise ConfigError(f"image '{key}' is not listed in --coco-annotations '{self.source}'")
        return self.image_ids[name]


def _coco_rows(found, key: str, sequential_id: int, ids: CocoIds | None) -> list[dict]:
    """COCO result dicts of one image: bbox [x, y, w, h] in pixels, rounded to 0.01."""
    image_id = ids.image_id(key) if ids else sequential_id
    rows = []
    for box, score, cls in zip(found.xyxy.tolist(), found.score.tolist(), found.class_id.tolist()):
        category = int(ids.category_ids[cls]) if ids else cls
        if category < 0:
            continue  # a class the dataset does not have
        x1, y1, x2, y2 = box
        bbox = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
        rows.append({"image_id": image_id, "category_id": category, "bbox": bbox, "score": round(score, 5)})
    return rows


def _batches(pictures: Iterator[tuple[str, int, av.VideoFrame]], size: int):
    """(keys, image numbers, frames) in groups of `size`, from `_frames`."""
    batch: list[tuple[str, int, av.VideoFrame]] = []
    for picture in pictures:
        batch.append(picture)
        if len(batch) == size:
            yield _columns(batch)
            batch = []
    if batch:
        yield _columns(batch)


def _columns(batch: list[tuple]) -> tuple[list, ...]:
    return tuple(list(column) for column in zip(*batch))


def _frames(inputs: list[Path], fps: float | None = None) -> Iterator[tuple[str, int, av.VideoFrame]]:
    """(key, image number, decoded frame) of every image and of every video frame the `fps` cap keeps; a key
    is the image path, or 'video#frame index'; image numbers count every picture of every input from 0, the
    skipped ones too. The detector converts each frame once, straight to the model's size."""
    number = 0
    for path in inputs:
        if not path.is_file():
            missing = "is a folder" if path.is_dir() else "does not exist"
            raise SourceError(f"input '{path}' {missing}; give image or video files")
        image = path.suffix.lower() in IMAGE_SUFFIXES
        cap = FpsCap(None if image else fps)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise SourceError(f"input '{path}' has no video; give jpg/png images or video files")
                stream = container.streams.video[0]
                for index, frame in enumerate(container.decode(stream)):
                    if cap.keep(_pts_ns(frame, index, stream.average_rate)):
                        yield (str(path) if image else f"{path}#{index}"), number, frame
                    number += 1
        except av.FFmpegError as exc:
            raise SourceError(f"input '{path}' cannot be decoded ({exc}); give jpg/png images or video files") from exc


def _pts_ns(frame: av.VideoFrame, index: int, rate: Fraction | None) -> int:
    """The frame's time on its video's clock; an untimed frame's from its index at the video's rate."""
    pts_ns = pts_to_ns(frame.pts, frame.time_base)
    return pts_ns if pts_ns != PTS_UNKNOWN else pts_to_ns(index, 1 / Fraction(rate or 25))
