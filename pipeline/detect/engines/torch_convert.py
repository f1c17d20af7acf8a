"""Model files -> a torch module on the CPU: what the torch engine moves to the GPU, and what `engine: auto` tries
before it picks that engine. Needs torch and, for ONNX, onnx2torch and onnxslim; no GPU.

    module = load_module(path)                  # eval mode, float32, on the CPU
    signature, metadata = read_model_info(path) # the torch engine's view of the file (`EngineKind.model_info`)

Formats, by suffix: ONNX (`.onnx`, and any other suffix), TorchScript (`.torchscript`, Ultralytics'
`format=torchscript`) and torch.export (`.pt2`). An ONNX file goes through ONNX shape inference and an
onnxslim pass first: Ultralytics exports that were not simplified have shared initializers onnx2torch
cannot map (`KeyError: 'model.2.cv1.conv.bias'`), and the pass folds the shape arithmetic into constants.
GridSample and opset 18's Split, Pad, Resize and reductions, which onnx2torch 1.5 lacks, get converters
and what onnx2torch gets wrong with torch 2.13 is mended after conversion (`onnx2torch_fixes`), constant
Slice bounds baked in so the module can be captured as a CUDA graph.

TorchScript and torch.export files carry no signature: the metadata comes from their `config.txt` extra
file (Ultralytics writes its export metadata there as JSON; `torch.export.save(..., extra_files=...)` can
too), the input size from its `imgsz` (a `.pt2` also records its input shape), and the output shapes from
one forward pass on a blank image.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.detect.engines.onnx2torch_converters import import_onnx2torch
from pipeline.detect.engines.onnx2torch_fixes import keep_shape_constants_on_host, mend, prepare
from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.errors import EngineError, first_line
from pipeline.plugins import model_format

log = logging.getLogger(__name__)

METADATA_FILE = "config.txt"
"""The extra file of a TorchScript or .pt2 archive that holds its metadata (JSON), as Ultralytics names it."""


def load_module(path: Path | str, device: Any = "cpu"):
    """The model as a torch module in eval mode on `device` (float32). EngineError says why it cannot be loaded.

    A TorchScript file is loaded straight onto the device: constants a trace baked in (Ultralytics' anchors)
    stay where they were loaded, whatever `.to()` does later."""
    path = _existing(path)
    fmt = model_format(path)
    import torch  # noqa: PLC0415 - the gpu extra's

    try:
        if fmt == "torchscript":
            return torch.jit.load(str(path), map_location=device).eval()
        if fmt == "torch.export":
            return exported_on(torch.export.load(str(path)), device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"torch cannot load the {fmt} file '{path}' ({first_line(exc)}); re-export it with "
                          "this torch version, or export the model to ONNX") from exc
    return convert_onnx(path).to(device)


def exported_on(program: Any, device: Any):
    """A torch.export program's module on `device`. `.to()` moves its parameters and buffers only: the devices its
    graph names (the anchors' `arange` on the CPU it was traced on) and the constants the export lifted (plain
    tensor attributes) are moved here too, except constants only ever read as numbers (`.item()`, e.g.
    Ultralytics' strides), which stay on the host where reading them needs no device sync. So no call copies
    from the host or waits for the device, which CUDA graph capture refuses."""
    import torch  # noqa: PLC0415 - the gpu extra's

    target = torch.device(device)
    module = program.module().to(target)
    for node in module.graph.nodes:
        if node.op == "get_attr" and not _read_as_numbers(node):
            owner_path, _, name = node.target.rpartition(".")
            owner = module.get_submodule(owner_path)
            value = vars(owner).get(name)
            if isinstance(value, torch.Tensor) and value.device != target:
                setattr(owner, name, value.to(target))
    named = [node for node in module.graph.nodes
             if isinstance(node.kwargs.get("device"), torch.device) and node.kwargs["device"] != target]
    for node in named:
        node.kwargs = {**node.kwargs, "device": target}
    if named:
        module.recompile()
    return module  # an exported module is in eval mode already (and refuses `.eval()`)


_NUMBER_READS = {"aten.item.default"}
_VIEWS = {"aten.select.int", "aten.slice.Tensor", "aten.squeeze.default", "aten.squeeze.dim"}


def _read_as_numbers(node) -> bool:
    """Every use of `node` ends, through views, in `.item()`."""
    uses = list(node.users)
    return bool(uses) and all(str(use.target) in _NUMBER_READS or (str(use.target) in _VIEWS and _read_as_numbers(use))
                              for use in uses)


_converted: dict[tuple, Any] = {}  # the module a conversion trial made, until the engine takes it


def trial(path: Path | str) -> str | None:
    """Load (convert) the model on the CPU now, as the torch engine would: None when it loads, else why not.

    The module is kept for the next `take_module` of the same file, so `engine: auto` converts once."""
    try:
        module = load_module(path)
    except EngineError as exc:
        return str(exc)
    _converted.clear()
    _converted[_file_key(path)] = module
    return None


def take_module(path: Path | str, device: Any = "cpu"):
    """The module `trial` made of this file (unchanged since) moved to `device`, else a fresh `load_module`; the
    caller owns it. TorchScript is always loaded afresh, straight onto the device (see `load_module`)."""
    module = _converted.pop(_file_key(path), None)
    if module is None or model_format(path) == "torchscript":
        return load_module(path, device)
    return module.to(device)


def _file_key(path: Path | str) -> tuple:
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        return (str(path),)
    return str(path), stat.st_mtime_ns, stat.st_size


def convert_onnx(path: Path | str):
    """An ONNX file as an onnx2torch fx.GraphModule: shape inference, onnxslim, conversion, constant slices folded."""
    import onnx  # noqa: PLC0415 - the gpu extra's
    from google.protobuf.message import DecodeError  # noqa: PLC0415 - onnx's

    path = _existing(path)
    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise EngineError(f"'{path}' is not an ONNX file ({first_line(exc)}); set detector.model to one") from exc
    onnx2torch = import_onnx2torch()
    try:
        import onnxslim  # noqa: PLC0415 - the gpu extra's
    except ImportError as exc:
        raise EngineError(f"engine 'torch' needs onnxslim ({exc}); install the gpu extra") from exc
    try:
        model = onnxslim.slim(onnx.shape_inference.infer_shapes(model))
        prepare(model)
        module = onnx2torch.convert(model)
    except (NotImplementedError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise EngineError(f"onnx2torch cannot convert '{path}': {first_line(exc)}; use engine 'onnxruntime'") from exc
    log.debug("%s: %s", path, mend(module))
    return module.eval()


def read_model_info(path: Path | str) -> tuple[ModelSignature, dict[str, str]]:
    """The signature and metadata of a model file as the torch engine sees it: an ONNX file's own (as ONNX
    Runtime reads it), or for TorchScript / .pt2 the `config.txt` metadata and the shapes of one forward pass.
    EngineError when it cannot be read."""
    path = _existing(path)
    if model_format(path) == "onnx":
        from pipeline.detect.engines.onnxruntime import read_model_info as read_onnx  # noqa: PLC0415

        return read_onnx(path)
    metadata = _torch_metadata(path)
    module = load_module(path)
    height, width = _input_hw(path, module, metadata)
    import torch  # noqa: PLC0415

    with torch.inference_mode():
        result = module(torch.zeros(1, 3, height, width))
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise EngineError(f"'{path}' returns {type(result).__name__}, not tensors; export a detection model")
    image = TensorInfo("images", ("batch", 3, height, width))
    described = tuple(TensorInfo(f"output{i}", ("batch", *o.shape[1:])) for i, o in enumerate(outputs))
    return ModelSignature((image,), described), metadata


def _torch_metadata(path: Path) -> dict[str, str]:
    """The `config.txt` JSON of a TorchScript or .pt2 archive, as ONNX-style strings ({} when absent)."""
    import torch  # noqa: PLC0415

    extra = {METADATA_FILE: ""}
    try:
        if model_format(path) == "torchscript":
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        else:
            torch.export.load(str(path), extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"torch cannot load '{path}' ({first_line(exc)}); re-export it with this torch version, "
                          "or export the model to ONNX") from exc
    text = extra[METADATA_FILE]
    text = text.decode() if isinstance(text, bytes) else text
    try:
        values = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise EngineError(f"'{path}': its {METADATA_FILE} is not JSON ({exc}); save the metadata as a JSON object") from exc
    return {key: _as_text(key, value) for key, value in values.items()} if isinstance(values, dict) else {}


def _as_text(key: str, value: Any) -> str:
    """A JSON metadata value written the way Ultralytics writes it into ONNX metadata (Python literals)."""
    if key == "names" and isinstance(value, dict):
        value = {int(k) if str(k).isdigit() else k: v for k, v in value.items()}
    return value if isinstance(value, str) else str(value)


def _input_hw(path: Path, module, metadata: dict[str, str]) -> tuple[int, int]:
    """The image input's (height, width): the metadata's `imgsz`, else a .pt2's recorded input shape."""
    from pipeline.detect.recognize import export_info  # noqa: PLC0415

    exported = export_info(metadata).input_wh
    if exported:
        return exported[1], exported[0]
    if model_format(path) == "torch.export":
        shape = _placeholder_shape(module)
        if shape and all(isinstance(d, int) for d in shape[2:4]):
            return shape[2], shape[3]
    raise EngineError(f"'{path}' does not say its input size: save {METADATA_FILE} with {{\"imgsz\": [height, width]}} "
                      "in it (Ultralytics exports have it), or export the model to ONNX")


def _placeholder_shape(module) -> tuple | None:
    """The first user input's shape as a .pt2 module recorded it (ints, or symbols for dynamic dims)."""
    for node in module.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if value is not None and getattr(value, "ndim", 0) == 4:
            return tuple(d if isinstance(d, int) else str(d) for d in value.shape)
    return None


def _existing(path: Path | str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise EngineError(f"model file '{path}' {'is a folder' if path.is_dir() else 'does not exist'}; set "
                          "detector.model to an ONNX, TorchScript (.torchscript) or torch.export (.pt2) file")
    return path


__all__ = ["keep_shape_constants_on_host", "load_module", "model_format", "read_model_info",
           "take_module", "trial"]
