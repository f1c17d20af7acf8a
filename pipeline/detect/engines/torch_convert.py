"""Model files -> a torch module on the CPU: what the torch engine moves to the GPU, and what `engine: auto` tries
before it picks that engine. Needs torch and, for ONNX, onnx2torch and onnxslim; no GPU.

    module = load_module(path)                  # eval mode, float32, on the CPU
    signature, metadata = read_model_info(path) # the torch engine's view of the file (`EngineKind.model_info`)

Formats, by suffix: ONNX (`.onnx`, and any other suffix), TorchScript (`.torchscript`, Ultralytics'
`format=torchscript`) and torch.export (`.pt2`). An ONNX file goes through ONNX shape inference and an
onnxslim pass first: Ultralytics exports that were not simplified have shared initializers onnx2torch
cannot map (`KeyError: 'model.2.cv1.conv.bias'`), and the pass folds the shape arithmetic into constants.
Opset 18's Split (`num_outputs`) and Pad (optional `axes`), which onnx2torch 1.5 lacks, get converters
here. onnx2torch's Slice reads its bounds back from the device on every call; `fold_constant_slices`
bakes constant bounds in, so the module can be captured as a CUDA graph.

TorchScript and torch.export files carry no signature: the metadata comes from their `config.txt` extra
file (Ultralytics writes its export metadata there as JSON; `torch.export.save(..., extra_files=...)` can
too), the input size from its `imgsz` (a `.pt2` also records its input shape), and the output shapes from
one forward pass on a blank image.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.errors import EngineError

log = logging.getLogger(__name__)

FORMATS = {".torchscript": "torchscript", ".pt2": "torch.export"}
"""Suffixes of the torch formats; every other file is read as ONNX."""
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "torch.export": "torch.export (.pt2)"}

METADATA_FILE = "config.txt"
"""The extra file of a TorchScript or .pt2 archive that holds its metadata (JSON), as Ultralytics names it."""


def model_format(path: Path | str) -> str:
    """"onnx", "torchscript" or "torch.export", from the file's suffix."""
    return FORMATS.get(Path(path).suffix.lower(), "onnx")


def load_module(path: Path | str):
    """The model as a torch module in eval mode on the CPU (float32). EngineError says why it cannot be loaded."""
    path = _existing(path)
    fmt = model_format(path)
    import torch  # noqa: PLC0415 - the gpu extra's

    try:
        if fmt == "torchscript":
            return torch.jit.load(str(path), map_location="cpu").eval()
        if fmt == "torch.export":
            return torch.export.load(str(path)).module()
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"torch cannot load the {fmt} file '{path}' ({_first_line(exc)}); re-export it with "
                          "this torch version, or export the model to ONNX") from exc
    return convert_onnx(path)


def convert_onnx(path: Path | str):
    """An ONNX file as an onnx2torch fx.GraphModule: shape inference, onnxslim, conversion, constant slices folded."""
    import onnx  # noqa: PLC0415 - the gpu extra's

    onnx2torch = _onnx2torch()
    import onnxslim  # noqa: PLC0415 - the gpu extra's

    path = _existing(path)
    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise EngineError(f"'{path}' is not an ONNX file ({_first_line(exc)}); set detector.model to one") from exc
    try:
        model = onnxslim.slim(onnx.shape_inference.infer_shapes(model))
        _fill_omitted_inputs(model)
        module = onnx2torch.convert(model)
    except (NotImplementedError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise EngineError(f"onnx2torch cannot convert '{path}': {_first_line(exc)}; use engine 'onnxruntime'") from exc
    log.debug("%s: %d constant Slice nodes folded, %d TopK/Tile/Reshape nodes given ints, %d LayerNorm shapes set",
              path, fold_constant_slices(module), fold_host_arguments(module), _layer_norm_shapes(module))
    return module.eval()


def _fill_omitted_inputs(model) -> None:
    """Drop the trailing empty names of omitted optional inputs, and give a Clip with no `min` an explicit
    -inf one: onnx2torch looks the empty name up as a tensor (RT-DETR's exports omit Clip's min)."""
    from onnx import numpy_helper  # noqa: PLC0415

    for node in model.graph.node:
        while node.input and not node.input[-1]:
            node.input.pop()
        if node.op_type == "Clip" and len(node.input) > 1 and not node.input[1]:
            name = f"{node.output[0]}_min"
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(-np.inf, np.float32), name))
            node.input[1] = name


def _onnx2torch():
    """onnx2torch with the opset-18 converters it lacks registered; EngineError when it cannot be imported
    (it imports torchvision, whose build must match torch's)."""
    try:
        import onnx2torch  # noqa: PLC0415 - the gpu extra's
    except (ImportError, RuntimeError, OSError) as exc:
        raise EngineError(f"engine 'torch' needs onnx2torch and a torchvision matching torch ({_first_line(exc)}); "
                          "install the gpu extra") from exc
    _register_opset18()
    return onnx2torch


OPSET18_REDUCE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                  "ReduceLogSumExp", "ReduceSumSquare")
"""Reductions whose `axes` became an input in opset 18 (onnx2torch 1.5 converts them up to opset 13)."""


@functools.cache
def _register_opset18() -> None:
    """Converters onnx2torch 1.5 lacks: GridSample, and the opset-18 forms of Split, Pad, Resize and the
    reductions, where they only moved an attribute to an input or added options; a node that uses a new
    option is refused (NotImplementedError)."""
    from onnx2torch.node_converters.pad import OnnxPadDynamic, _onnx_to_torch_mode  # noqa: PLC0415
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes  # noqa: PLC0415
    from onnx2torch.node_converters.registry import add_converter, get_converter  # noqa: PLC0415
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node  # noqa: PLC0415,E501

    def result(node, module):
        return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))

    def split(node, graph):  # noqa: ARG001 - the registry's signature
        return result(node, SplitModule(node.attributes.get("axis", 0), len(node.output_values)))

    def pad(node, graph):  # noqa: ARG001
        if len(node.input_values) > 3 and node.input_values[3]:
            raise NotImplementedError("Pad with an `axes` input (opset 18)")
        return result(node, OnnxPadDynamic(mode=_onnx_to_torch_mode(node.attributes.get("mode", "constant"))))

    def resize(node, graph):
        attributes = node.attributes
        if attributes.get("antialias", 0) or attributes.get("axes") or \
                attributes.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise NotImplementedError("Resize with antialias, axes or keep_aspect_ratio_policy (opset 18)")
        return get_converter("Resize", 13)(node, graph)

    def reduce(node, graph):
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            axes = get_const_value(node.input_values[1], graph).tolist()  # KeyError when not a constant
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes (opset 18)")
        module = OnnxReduceStaticAxes(node.operation_type, axes, node.attributes.get("keepdims", 1))
        mapping = OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)  # the axes are baked in
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    def grid_sample(node, graph):  # noqa: ARG001
        attributes = node.attributes
        mode = {"linear": "bilinear", "cubic": "bicubic"}.get(attributes.get("mode", "bilinear"),
                                                             attributes.get("mode", "bilinear"))
        return result(node, GridSampleModule(mode, attributes.get("padding_mode", "zeros"),
                                             bool(attributes.get("align_corners", 0))))

    converters = {("Split", 18): split, ("Pad", 18): pad, ("Resize", 18): resize, ("GridSample", 16): grid_sample,
                  **{(op, 18): reduce for op in OPSET18_REDUCE}}
    for (op, version), converter in converters.items():
        try:
            get_converter(op, version)
        except NotImplementedError:  # a later onnx2torch may have its own: that one stays
            add_converter(operation_type=op, version=version)(converter)


@functools.cache
def _split_module():
    import torch  # noqa: PLC0415

    class _Split(torch.nn.Module):
        """ONNX Split-18: sizes from the `split` input, else `num_outputs` chunks of ceil(len / n) (the last smaller)."""

        def __init__(self, axis: int, outputs: int):
            super().__init__()
            self.axis, self.outputs = axis, outputs

        def forward(self, x, split=None):
            if split is not None:
                return torch.split(x, split.tolist(), dim=self.axis)
            return torch.split(x, -(-x.shape[self.axis] // self.outputs), dim=self.axis)

    return _Split


def SplitModule(axis: int, outputs: int):  # noqa: N802 - builds the nn.Module lazily (torch is optional)
    return _split_module()(axis, outputs)


@functools.cache
def _grid_sample_module():
    import torch  # noqa: PLC0415

    class _GridSample(torch.nn.Module):
        """ONNX GridSample-16 on 4-D inputs (RT-DETR's deformable attention): torch's grid_sample, same options."""

        def __init__(self, mode: str, padding_mode: str, align_corners: bool):
            super().__init__()
            self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners

        def forward(self, x, grid):
            return torch.nn.functional.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode,
                                                   align_corners=self.align_corners)

    return _GridSample


def GridSampleModule(mode: str, padding_mode: str, align_corners: bool):  # noqa: N802 - lazy, like SplitModule
    return _grid_sample_module()(mode, padding_mode, align_corners)


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
        raise EngineError(f"torch cannot load '{path}' ({_first_line(exc)}); re-export it with this torch version, "
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# -- CUDA-graph friendliness: constants that onnx2torch modules read on the host ------------------------------
SHAPE_OPERATORS = ("OnnxReshape", "OnnxResize", "OnnxResizeV10", "OnnxSlice", "OnnxExpand", "OnnxTile")
"""onnx2torch modules that read their non-data arguments (shapes, scales, bounds) on the host."""


def keep_shape_constants_on_host(module) -> int:
    """Move the constant shape/scale arguments of SHAPE_OPERATORS nodes back to the CPU.

    Those modules call `.tolist()` or `torch.any()` on them; on the host that is free, on the GPU
    it is a synchronising copy per call that also breaks CUDA-graph capture. Returns how many moved.
    """
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes") or not hasattr(module, "get_submodule"):
        return 0  # TorchScript: nothing of onnx2torch's in it
    moved = 0
    for node in graph.nodes:
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ not in SHAPE_OPERATORS:
            continue
        for arg in node.args[1:]:
            moved += _move_constant_to_host(module, arg)
    return moved


def _move_constant_to_host(module, arg) -> int:
    op = getattr(arg, "op", None)
    if op == "get_attr":
        owner_path, _, attr = arg.target.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
    elif op == "call_module" and not arg.args:
        owner, attr = module.get_submodule(arg.target), "value"
    else:
        return 0
    tensor = owner._buffers.get(attr)
    if tensor is None or tensor.device.type == "cpu":
        return 0
    owner._buffers[attr] = tensor.cpu()
    return 1


def fold_constant_slices(module) -> int:
    """Rewrite onnx2torch Slice nodes whose starts/ends/axes/steps are constants into plain indexing.

    Returns how many nodes were rewritten. The rewritten graph runs without reading tensors back
    to the host, so it can be captured as a CUDA graph (and is faster eagerly too).
    """
    from onnx2torch.node_converters.slice import OnnxSlice, _get_slices  # noqa: PLC0415 - the gpu extra's

    folded = 0
    for node in list(module.graph.nodes):
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), OnnxSlice):
            continue
        values = [_constant_value(module, arg) for arg in node.args[1:]]
        if any(v is _NOT_CONSTANT for v in values):
            continue
        starts, ends, axes, steps = (*values, None, None)[:4]
        flips, positive, negative = _get_slices(starts, ends, axes, steps)
        name = f"{node.target}_folded"
        module.add_submodule(name, ConstantSlice(flips, positive, negative))
        node.target = name
        node.args = node.args[:1]
        folded += 1
    if folded:
        module.graph.eliminate_dead_code()
        module.recompile()
    return folded


def _layer_norm_shapes(module) -> int:
    """Give each LayerNorm its weight's shape as normalized_shape: onnx2torch reads it from the input's
    shape, which a dynamic export leaves symbolic (0). Returns how many were set."""
    import torch  # noqa: PLC0415

    fixed = 0
    for norm in module.modules():
        if isinstance(norm, torch.nn.LayerNorm) and norm.weight is not None:
            if tuple(norm.normalized_shape) != tuple(norm.weight.shape):
                norm.normalized_shape, fixed = tuple(norm.weight.shape), fixed + 1
    return fixed


def fold_host_arguments(module) -> int:
    """Replace onnx2torch's TopK, Tile and Reshape, which hand torch tensors where torch 2.13 takes Python
    ints (`k`, `repeats`, a shape with 0 = "keep this dim"), by modules that take ints: baked in when the
    argument is a constant (RT-DETR's top 300), else read from the tensor on each call. Returns how many."""
    from onnx2torch.node_converters.reshape import OnnxReshape  # noqa: PLC0415 - the gpu extra's
    from onnx2torch.node_converters.tile import OnnxTile  # noqa: PLC0415
    from onnx2torch.node_converters.topk import OnnxTopK  # noqa: PLC0415

    replaced = 0
    for node in list(module.graph.nodes):
        target = module.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(target, (OnnxTopK, OnnxTile, OnnxReshape)) or len(node.args) < 2:
            continue
        value = _constant_value(module, node.args[1])
        fixed = None if value is _NOT_CONSTANT else [int(v) for v in value.reshape(-1)]
        if isinstance(target, OnnxTopK):
            replacement = IntArgumentModule("topk", fixed, dim=target.dim, largest=target.largest, sorted=target.sorted)
        else:
            replacement = IntArgumentModule("repeat" if isinstance(target, OnnxTile) else "reshape", fixed)
        name = f"{node.target}_ints"
        module.add_submodule(name, replacement)
        node.target = name
        if fixed is not None:
            node.args = node.args[:1]
        replaced += 1
    if replaced:
        module.graph.eliminate_dead_code()
        module.recompile()
    return replaced


@functools.cache
def _int_argument_module():
    import torch  # noqa: PLC0415

    class _IntArgument(torch.nn.Module):
        """`torch.topk(x, k)`, `x.repeat(repeats)` or ONNX Reshape (0 keeps that dim of x) with the ints fixed
        at conversion, or read from the tensor argument."""

        def __init__(self, op: str, fixed: list[int] | None, **options):
            super().__init__()
            self.op, self.fixed, self.options = op, fixed, options

        def forward(self, x, argument=None):
            ints = self.fixed if self.fixed is not None else [int(v) for v in argument.reshape(-1).tolist()]
            if self.op == "topk":
                values, indices = torch.topk(x, ints[0], **self.options)
                return values, indices
            if self.op == "repeat":
                return x.repeat(ints)
            return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(ints)])

    return _IntArgument


def IntArgumentModule(op: str, fixed: list[int] | None, **options):  # noqa: N802 - lazy, like SplitModule
    return _int_argument_module()(op, fixed, **options)


_NOT_CONSTANT = object()


def _constant_value(module, arg):
    """A CPU tensor for a constant fx argument (initializer or Constant node), else _NOT_CONSTANT."""
    if arg is None:
        return None
    op = getattr(arg, "op", None)
    if op == "get_attr":
        tensor = functools.reduce(getattr, arg.target.split("."), module)
    elif op == "call_module" and not arg.args and hasattr(module.get_submodule(arg.target), "value"):
        tensor = module.get_submodule(arg.target).value
    else:
        return _NOT_CONSTANT
    import torch  # noqa: PLC0415

    return tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))


@functools.cache
def _constant_slice_module():
    import torch  # noqa: PLC0415

    class _ConstantSlice(torch.nn.Module):
        """x[slices] with bounds fixed at conversion time (negative steps as a flip first)."""

        def __init__(self, flips: list, positive: list, negative: list):
            super().__init__()
            self.flips = [int(d) for d in flips]
            self.positive = tuple(_py_slice(s) for s in positive)
            self.negative = tuple([Ellipsis, *(_py_slice(s) for s in negative[1:])]) if negative else ()

        def forward(self, x):
            if self.flips:
                x = torch.flip(x, dims=self.flips)
            if self.positive:
                x = x[self.positive]
            if self.negative:
                x = x[self.negative]
            return x

    return _ConstantSlice


def _py_slice(s):
    if not isinstance(s, slice):
        return s
    as_int = (lambda v: None if v is None else int(v))  # noqa: E731 - numpy ints -> Python ints
    return slice(as_int(s.start), as_int(s.stop), as_int(s.step))


def ConstantSlice(flips, positive, negative):  # noqa: N802 - builds the nn.Module lazily (torch is optional)
    return _constant_slice_module()(flips, positive, negative)
