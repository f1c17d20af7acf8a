"""Class names: from the ONNX metadata `names`, the config, or COCO-80; and the `classes` filter."""
from __future__ import annotations

import ast
import codecs
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.types import class_ids

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

# The COCO dataset's category ids (1..90 with gaps) of the 80 classes above, in the same order.
COCO80_TO_91 = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]  # fmt: skip


def metadata_value(metadata: dict[str, str], key: str):
    """The Python literal Ultralytics wrote as text under `key` ("{0: 'person'}", "[640, 640]"), or None when it
    is absent or unreadable."""
    try:
        return ast.literal_eval(metadata[key]) if metadata.get(key) else None
    except (ValueError, SyntaxError):
        return None


def names_from_metadata(metadata: dict[str, str]) -> list[str] | None:
    """Names from an Ultralytics-style metadata entry `names` ("{0: 'person', 1: 'bicycle'}"), or None."""
    value = metadata_value(metadata, "names")
    if isinstance(value, dict) and all(isinstance(k, int) for k in value):
        size = max(value) + 1 if value else 0
        return [str(value.get(i, f"class{i}")) for i in range(size)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return None


def names_from_config(class_names: list[str] | Path | None) -> list[str] | None:
    """Names from the config: a list, or a text file with one name per line (blank lines skipped)."""
    if class_names is None:
        return None
    if isinstance(class_names, Path):
        path = class_names.expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"detector.class_names file '{path}' cannot be read ({exc}); give a list or a text file") from exc
        return _file_names(path, _text(path, data).splitlines())
    return list(class_names)


def _text(path: Path, data: bytes) -> str:
    """A names file's text: UTF-8 (a leading byte order mark is no name), or UTF-16 where its byte order mark says
    so (Windows PowerShell 5 writes `>` redirects that way); ConfigError naming the line that is neither."""
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding).count("\n") + 1  # what precedes the error decodes
        raise ConfigError(f"detector.class_names file '{path}' line {line} is not {'UTF-16' if utf16 else 'UTF-8'} "
                          f"text ({exc.reason}); save the file as UTF-8") from None


def _file_names(path: Path, lines: list[str]) -> list[str]:
    """The names of a file's lines (blank ones skipped); ConfigError for a file that names none."""
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise ConfigError(f"detector.class_names file '{path}' names no class; write one name per line, in class id "
                          "order, or leave detector.class_names out to take the model's names")
    return names


def resolve_names(metadata: dict[str, str], class_names: list[str] | Path | None) -> tuple[list[str], str]:
    """Class names and where they came from: model metadata first, then config, then COCO-80 (checked against the
    model's output by `recognize.class_names`)."""
    names, source = names_from_metadata(metadata), "model metadata"
    if not names:
        names, source = names_from_config(class_names), "detector.class_names"
    if not names:
        names, source = list(COCO80), "COCO-80 default"
    return names, source


def check_one_per_class(names: list[str], source: str, classes: int | None) -> None:
    """ConfigError when `classes` (how many the model's output has, `recognize.class_count`; None: its shape does
    not say) is not the number of `names`: boxes of a class without a name would be dropped, the others misnamed."""
    if classes is not None and len(names) != classes:
        fix = "check detector.head" if source == "model metadata" else \
            f"set detector.class_names to the model's {classes} class names, in class id order"
        raise ConfigError(f"the model's output has {classes} class{'es' if classes != 1 else ''}, and {source} "
                          f"names {len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); {fix}")


def class_filter(classes: list[str] | None, names: list[str]) -> np.ndarray | None:
    """Class ids (K,) int32 for the names in `classes` (every id of a name several share), or None to keep all.

    Raises ConfigError naming an unknown class and a few known ones.
    """
    if classes is None:
        return None
    ids, unknown = class_ids(classes, names)
    if unknown:
        raise ConfigError(
            f"detector.classes: unknown class {unknown[0]!r}; the model's classes include "
            f"{names[:8]}{' ...' if len(names) > 8 else ''} ({len(names)} in all)"
        )
    return ids
