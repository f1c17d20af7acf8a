"""What a detection model file is: its head and its input size, read from the file alone.

Ultralytics exports say what they are in their metadata (`task`, `imgsz` [h, w], `stride`, `end2end`,
`head`, `names`, and the export's `args`, where `nms: True` says NMS is inside); other files are told apart by their output names and shapes, which may be
symbolic ('batch', 'anchors'). A `detector.head` or `detector.input_size` in the config wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect.heads import HEADS, STRIDES, ModelSignature, grid_points
from pipeline.detect.names import check_one_per_class, metadata_value, names_from_metadata, resolve_names
from pipeline.errors import ConfigError

DETECTION_ONLY = "streamweave runs detection models only; export the detection variant (task 'detect')"
TRANSPOSED = ("an Ultralytics output transposed to [batch, anchors, 4 + classes], with no objectness column; "
              "streamweave reads Ultralytics' own layout [batch, 4 + classes, anchors]: export the model without the "
              "transpose")


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What a file's metadata says. task: Ultralytics task ('detect', 'segment', 'pose', 'obb', ...) or None;
    input_wh: (w, h) the model was exported at, or None; end2end: final boxes out, NMS-free or exported with NMS
    inside (`nms=True`: [B, 300, 6] corners, score, class, as the end-to-end heads); head_module: the
    Ultralytics head class ('Detect', 'v10Detect', 'RTDETRDecoder', ...); classes: how many names; rtdetr: an RT-DETR
    (its head, or, in files from before Ultralytics wrote the head, its description: 'Ultralytics rtdetr-l model')."""

    task: str | None = None
    input_wh: tuple[int, int] | None = None
    end2end: bool = False
    head_module: str | None = None
    classes: int | None = None
    rtdetr: bool = False


def export_info(metadata: dict[str, str]) -> ExportInfo:
    """The ExportInfo of a file's custom metadata; keys that are absent or unreadable are left out."""
    names = names_from_metadata(metadata)
    return ExportInfo(
        task=metadata.get("task") or None,
        input_wh=_imgsz_wh(metadata_value(metadata, "imgsz")),
        end2end=metadata.get("end2end", "").strip().lower() == "true" or _nms_inside(metadata_value(metadata, "args")),
        head_module=metadata.get("head") or None,
        classes=len(names) if names else None,
        rtdetr=metadata.get("head") == "RTDETRDecoder" or "rtdetr" in metadata.get("description", "").lower(),
    )


def _nms_inside(args) -> bool:
    """Whether Ultralytics' export arguments (`args`) say NMS was exported with the model."""
    return isinstance(args, dict) and args.get("nms") is True


def _imgsz_wh(value) -> tuple[int, int] | None:
    """Ultralytics `imgsz` ([640, 640] as [h, w], or 640) -> (w, h)."""
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return value[1], value[0]
    return None


def detect_head(signature: ModelSignature, metadata: dict[str, str] | None = None, override: str = "auto") -> str:
    """The head of a model from its metadata and outputs; a YAML `head` other than "auto" wins.

    Raises ConfigError for segment, pose and OBB exports (detection models only), and naming the
    outputs when the layout is not one of HEADS.
    """
    if override != "auto":
        if override not in HEADS:
            raise ConfigError(f"detector.head '{override}' is unknown; use one of {list(HEADS)} or 'auto'")
        return override
    info = export_info(metadata or {})
    described = ", ".join(f"{o.name}{list(o.shape)}" for o in signature.outputs)
    if info.task and info.task != "detect":
        raise ConfigError(f"the model is a '{info.task}' export (its metadata says so); {DETECTION_ONLY}")
    out_names = {o.name for o in signature.outputs}
    if {"labels", "boxes", "scores"} <= out_names or "orig_target_sizes" in {i.name for i in signature.inputs}:
        return "detr"
    if len(signature.outputs) > 1:
        raise ConfigError(
            f"the model has {len(signature.outputs)} outputs ({described}) where a detector has one, or DETR's "
            f"labels/boxes/scores; segment and pose exports look like this: {DETECTION_ONLY}. For another "
            f"detector, set detector.head to one of {list(HEADS)}"
        )
    head = _ultralytics_head(signature, info) if info.task == "detect" else _head_from_shape(signature, info)
    if head:
        return head
    raise ConfigError(
        f"cannot tell the model head from its outputs ({described}); set detector.head to one of {list(HEADS)}"
    )


def _ultralytics_head(signature: ModelSignature, info: ExportInfo) -> str:
    """An Ultralytics detection export: RT-DETR [B, K, 6], end-to-end (YOLOv10/YOLO26) or [B, 4+nc, N]
    (v5u/v8/11/26)."""
    shape = signature.outputs[0].shape
    if info.rtdetr and _rtdetr_before_8_4(shape):
        raise ConfigError(f"the output {signature.outputs[0].name}{list(shape)} is that of an RT-DETR exported by "
                          "Ultralytics before 8.4 ([batch, 300, 4 + classes]); streamweave reads the [batch, 300, 6] "
                          "(box, score, class) of 8.4 and later: export it again with ultralytics 8.4 or later")
    if info.head_module == "RTDETRDecoder":
        return "rtdetr"
    if info.end2end:
        return "end2end"
    channels = 4 + info.classes if info.classes else None
    if len(shape) == 3 and channels and isinstance(shape[1], int) and shape[1] != channels:
        if shape[2] == channels:
            raise ConfigError(f"the output {signature.outputs[0].name}{list(shape)} has 4 + {info.classes} columns: "
                              f"{TRANSPOSED}")
        raise ConfigError(
            f"the output {signature.outputs[0].name}{list(shape)} has {shape[1]} channels, not 4 + {info.classes} "
            f"classes (a pose or OBB export, or an RT-DETR from an Ultralytics version before 8.4?); {DETECTION_ONLY}"
        )
    return "ultralytics"


def _rtdetr_before_8_4(shape: tuple) -> bool:
    """Whether an RT-DETR's output has Ultralytics' layout before 8.4, [B, 300, 4 + classes]: a fixed last dim other
    than 6, or fixed queries beside a symbolic last dim (those dynamic exports called the columns 'anchors'); 8.4's
    [B, 300, 6] is all symbolic in a dynamic export."""
    if len(shape) != 3:
        return False
    return shape[2] != 6 if isinstance(shape[2], int) else isinstance(shape[1], int)


def _head_from_shape(signature: ModelSignature, info: ExportInfo) -> str | None:
    """Tell the single-output layouts apart by how many points the input size implies, or by how many
    channels the metadata's class count implies; None when the shape leaves it open."""
    shape = signature.outputs[0].shape
    if len(shape) != 3:
        return None
    d1, d2 = shape[1], shape[2]
    width, height = _fixed_wh(signature) or info.input_wh or (None, None)
    if width and height:
        points = grid_points(width, height)
        if d1 == points:
            return "yolox"
        if d1 == 3 * points:
            return "yolov5"
        if d2 == points:
            return "ultralytics"
    if info.classes and d1 == 4 + info.classes:
        return "ultralytics"
    if info.classes and d2 == 5 + info.classes:
        return "yolov5"  # YOLOv5's own exports write `names` and `stride`, and mark only batch and anchors dynamic
    if d2 == 6 and isinstance(d1, int) and d1 <= 1000:  # YOLOv10/YOLO26 keep K = 300 final boxes
        return "end2end"
    if d2 == 6:
        return None  # could as well be a one-class YOLOv5 [B, N, 6]: the user must say
    if isinstance(d1, int) and isinstance(d2, int):
        return "ultralytics" if d1 < d2 else "yolov5"
    if isinstance(d1, int):
        return "ultralytics"  # [B, 4+nc, anchors]
    return None


def class_count(signature: ModelSignature, head: str) -> int | None:
    """How many classes the output of a `head` model has by its shape: Ultralytics [B, 4+nc, N], YOLOv5 and
    YOLOX [B, N, 5+nc]; None where the shape does not say (a symbolic dim, a head that gives class ids)."""
    shape = signature.outputs[0].shape if len(signature.outputs) == 1 else ()
    if len(shape) != 3:
        return None
    channels, box = {"ultralytics": (shape[1], 4), "yolov5": (shape[2], 5), "yolox": (shape[2], 5)}.get(head, (None, 0))
    return channels - box if isinstance(channels, int) and channels > box else None


def class_names(signature: ModelSignature, head: str, metadata: dict[str, str],
                configured: list[str] | Path | None) -> tuple[list[str], str]:
    """`names.resolve_names`, one name per class of the output. A YOLOX-shaped output [B, N, C] (one row per anchor
    point) whose C is 4 + the names, not 5 + them, is refused as a transposed Ultralytics output: the shape alone
    cannot tell the two apart, and read as YOLOX its first class would be taken for objectness."""
    classes = class_count(signature, head)
    names, source = resolve_names(metadata, configured)
    if head == "yolox" and classes is not None and len(names) == classes + 1:
        output = signature.outputs[0]
        raise ConfigError(f"the output {output.name}{list(output.shape)} has one row per anchor point, as YOLOX's "
                          f"[batch, anchors, 5 + classes], but its {classes + 5} columns are 4 + one per class "
                          f"({source}: {len(names)} names): {TRANSPOSED} (a YOLOX of {classes} classes: "
                          f"set detector.class_names to its {classes} names)")
    check_one_per_class(names, source, classes)
    return names, source


def check_raw_yolox(output, input_wh: tuple[int, int], model) -> None:
    """ConfigError when a YOLOX-shaped output (host, [B, N, 5 + classes]) of a mid-grey image is already decoded
    to pixels (YOLOv6, YOLOX exported with --decode_in_inference): read as raw it would be decoded a second time.
    Raw YOLOX gives box centres as offsets of a few grid cells; decoded ones reach across the image."""
    reach = float(np.nanmax(output[..., 0], initial=0.0))
    if reach <= max(8.0, input_wh[0] / 4):
        return
    raise ConfigError(
        f"model '{model}': its output {list(output.shape[1:])} per image has one row per anchor point as YOLOX's raw "
        f"output, but its boxes are already in pixels (centres up to x = {reach:.0f} on a grey image, where raw "
        "YOLOX gives offsets of a few grid cells): a YOLOv6 export, or a YOLOX exported with --decode_in_inference. "
        "Set detector.head to 'yolov5', which reads decoded [batch, anchors, 5 + classes] boxes; for a YOLOX also "
        "set detector.preprocess color 'bgr' and scale 1 (or export it again without --decode_in_inference)")


def _fixed_wh(signature: ModelSignature) -> tuple[int, int] | None:
    shape = signature.inputs[0].shape if signature.inputs else ()
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return shape[3], shape[2]
    return None


def input_size(
    signature: ModelSignature, config: DetectorConfig, metadata: dict[str, str] | None = None
) -> tuple[int, int]:
    """Model input (w, h): the model's fixed spatial dims; for a dynamic input, `detector.input_size`, else
    the size in the file's metadata (Ultralytics `imgsz`). ConfigError when none gives it, or when the
    config differs from a fixed input."""
    shape = signature.inputs[0].shape if signature.inputs else ()
    if len(shape) != 4:
        raise ConfigError(f"model '{config.model}' takes {list(shape)}, not images [batch, channels, height, width]; "
                          "set detector.model to a detection model")
    image = signature.inputs[0]
    if isinstance(shape[1], int) and shape[1] != 3:
        if 1 in (shape[1], shape[3]):
            raise ConfigError(f"model '{config.model}' takes {list(shape)}, one channel (grayscale); streamweave feeds "
                              "RGB images [batch, 3, height, width]: use a model trained on 3-channel (RGB) images")
        layout = "channels last [batch, height, width, channels]" if shape[3] == 3 else f"{shape[1]} channels"
        raise ConfigError(f"model '{config.model}' takes {list(shape)}, {layout}; streamweave feeds RGB images "
                          "[batch, 3, height, width]: export the model with its input channels first")
    if image.dtype not in ("tensor(float)", "tensor(float16)"):
        raise ConfigError(f"model '{config.model}' takes {image.dtype} input; streamweave feeds float images "
                          "scaled as the head wants: export the model with a float32 (or float16) input")
    fixed = _fixed_wh(signature)
    if fixed is not None and min(fixed) <= 0:
        raise ConfigError(f"model '{config.model}' takes images of {fixed[0]}x{fixed[1]} pixels [batch, channels, height, "
                          "width]: a broken export; export the model again")
    if config.input_size is not None and fixed is not None and tuple(config.input_size) != fixed:
        raise ConfigError(f"detector.input_size {list(config.input_size)} differs from the fixed input {list(fixed)} "
                          f"of model '{config.model}'; remove detector.input_size (or export the model with a "
                          "dynamic input size)")
    if config.input_size is not None and fixed is None:
        _divisible(config, _stride(signature, metadata or {}))
    exported = export_info(metadata or {}).input_wh
    size = fixed or (tuple(config.input_size) if config.input_size is not None else None) or exported
    if size is None:
        raise ConfigError(
            f"model '{config.model}' has a dynamic input size {list(shape)} and no `imgsz` in its metadata; set "
            "detector.input_size: [width, height]"
        )
    return size


def _stride(signature: ModelSignature, metadata: dict[str, str]) -> int | None:
    """The largest stride of a model's feature maps: its metadata's `stride`, else 32 for a one-output layout (a
    YOLO or RT-DETR); None for DETR-style outputs, whose backbones differ."""
    stride = metadata_value(metadata, "stride")
    if isinstance(stride, int) and stride > 0:
        return stride
    return max(STRIDES) if len(signature.outputs) == 1 else None


def _divisible(config: DetectorConfig, stride: int | None) -> None:
    """ConfigError when `detector.input_size` has a side `stride` does not divide: the network's strided and
    upsampled feature maps would then differ by a row, and every batch would fail in the engine."""
    if stride is None or not any(side % stride for side in config.input_size):
        return
    up = [-(-side // stride) * stride for side in config.input_size]
    raise ConfigError(f"detector.input_size {list(config.input_size)}: model '{config.model}' takes sides that are "
                      f"multiples of {stride} (its largest stride); use {up}, say")
