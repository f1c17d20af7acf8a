"""The TensorRT engine's inputs and outputs, planned from the model's signature and metadata without TensorRT.

    bindings = plan_bindings(signature, "ultralytics", (640, 640), classes=80, max_batch=64)
    bindings.profiles   # one optimisation profile per input: images (1..64, 3, 640, 640)
    bindings.outputs    # {"output0": (None, 84, 8400)}: None where the batch (or a free dim) goes
    check_outputs(bindings, {"output0": (64, 84, 8400)}, rows=64)   # what TensorRT inferred, checked

Symbolic dims (Ultralytics' 'batch', 'anchors', DEIM's 'N') are filled from what the head implies: an
`ultralytics` head has 4 + classes channels and one anchor per grid point of the input size; `end2end`
(YOLOv10/YOLO26) and `rtdetr` keep K final boxes of 6 numbers; `detr` (DEIM, RT-DETRv2) has labels [B, K],
boxes [B, K, 4] and scores [B, K], and a second input, the original sizes [B, 2], which gets a profile too.
A fixed dim of the file that contradicts its head is refused before anything is built.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.detect.engines.trt_keys import Profile, profile_for
from pipeline.detect.heads import ModelSignature, grid_points

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class Bindings:
    """image_input: the name of the image input. profiles: one per input, image first. outputs: name -> shape,
    None for the batch and for dims the head leaves free (K of a top-K head whose file does not fix it).
    fixed_batch: the batch of a static export (every batch runs at it), None for a dynamic one."""

    image_input: str
    profiles: tuple[Profile, ...]
    outputs: dict[str, Shape]
    fixed_batch: int | None = None


def plan_bindings(signature: ModelSignature, head: str, input_wh: tuple[int, int], classes: int | None,
                  max_batch: int, opt_batch: int | None = None) -> Bindings:
    """Profiles for every input and the expected output shapes. input_wh: the model input (w, h) the detector
    resolved (a dynamic file's comes from the config or its `imgsz`); classes: how many, when known.
    ValueError names the tensor whose dims cannot be planned or contradict the head. A static batch k is the
    profile's min, opt and max: TensorRT refuses a profile that differs from a static dim."""
    if not signature.inputs:
        raise ValueError("the model has no inputs")
    width, height = input_wh
    image = next((i for i in signature.inputs if len(i.shape) == 4), None)
    if image is None:
        raise ValueError(f"no image input [batch, channels, height, width] among {_describe(signature.inputs)}")
    channels = image.shape[1] if _fixed(image.shape[1]) else 3
    fixed_batch = image.shape[0] if _fixed(image.shape[0]) else None
    profiles = [_profile(image.name, (channels, height, width), max_batch, opt_batch, fixed_batch)]
    for extra in signature.inputs:
        if extra is image:
            continue
        if not all(_fixed(d) for d in extra.shape[1:]):
            raise ValueError(f"input '{extra.name}' {list(extra.shape)} has dynamic dims besides the batch; "
                             "export it with fixed ones")
        profiles.append(_profile(extra.name, tuple(extra.shape[1:]), max_batch, opt_batch, fixed_batch))
    implied = _implied_outputs(signature, head, (width, height), classes)
    outputs = {o.name: _merge(o.name, o.shape, implied.get(o.name)) for o in signature.outputs}
    return Bindings(image.name, tuple(profiles), outputs, fixed_batch)


def _profile(name: str, dims: tuple, max_batch: int, opt_batch: int | None, fixed_batch: int | None) -> Profile:
    if fixed_batch:
        return Profile(name, (fixed_batch, *dims), (fixed_batch, *dims), (fixed_batch, *dims))
    return profile_for(name, dims, max_batch, opt_batch)


def _implied_outputs(signature: ModelSignature, head: str, input_wh: tuple[int, int], classes: int | None) -> dict:
    """name -> the shape (without batch) the head implies; None for a dim it leaves free."""
    points = grid_points(*input_wh)
    if head == "detr":
        return {"labels": (None,), "boxes": (None, 4), "scores": (None,)}
    name = signature.outputs[0].name
    columns = None if classes is None else 5 + classes
    implied = {
        "ultralytics": (None if classes is None else 4 + classes, points),
        "yolov5": (3 * points, columns),
        "yolox": (points, columns),
        "end2end": (None, 6),
        "rtdetr": (None, 6),
    }
    if head not in implied:
        raise ValueError(f"head '{head}' has no TensorRT output plan")
    return {name: implied[head]}


def _merge(name: str, shape: tuple, implied: tuple | None) -> Shape:
    """The file's shape with symbolic dims filled from `implied`; ValueError when a fixed dim contradicts it."""
    rest = tuple(shape[1:])
    if implied is None:
        return (None, *(d if _fixed(d) else None for d in rest))
    if len(rest) != len(implied):
        raise ValueError(f"output '{name}' {list(shape)} has {len(shape)} dims; the head expects {len(implied) + 1}")
    merged = []
    for have, want in zip(rest, implied):
        if _fixed(have) and want is not None and have != want:
            raise ValueError(f"output '{name}' {list(shape)} does not fit the head: a dim is {have}, expected {want} "
                             "(check detector.head, detector.input_size and the class names)")
        merged.append(have if _fixed(have) else want)
    return (None, *merged)


def check_outputs(bindings: Bindings, reported: dict[str, tuple[int, ...]], rows: int) -> None:
    """ValueError naming the output whose shape TensorRT inferred for `rows` rows differs from the plan."""
    for name, expected in bindings.outputs.items():
        got = tuple(reported.get(name, ()))
        want = (rows, *expected[1:])
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            raise ValueError(f"TensorRT gives output '{name}' the shape {list(got)} for {rows} rows; expected "
                             f"{[w if w is not None else '*' for w in want]}")


def _fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _describe(tensors) -> str:
    return ", ".join(f"{t.name}{list(t.shape)}" for t in tensors)
