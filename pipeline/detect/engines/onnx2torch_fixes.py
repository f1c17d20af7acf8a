"""What onnx2torch 1.5 gets wrong or lacks, mended before and after `onnx2torch.convert` (used by `torch_convert`).

Before: omitted optional inputs (an empty name) are dropped or made explicit, and a graph output that is one of
a node's several outputs gets an Identity of its own (the converters onnx2torch lacks are in
`onnx2torch_converters`). After: modules that hand torch tensors where torch 2.13 wants ints
(TopK, Tile, Reshape with 0) get ints, a Gather of one constant index becomes `select`, LayerNorm gets its
weight's shape, and Slice nodes with constant bounds are folded into plain indexing (onnx2torch reads those
bounds back from the device on every call, which a CUDA graph cannot capture).
"""
from __future__ import annotations

import functools

import numpy as np


def prepare(model) -> None:
    """Mend an ONNX ModelProto in place before conversion."""
    _fill_omitted_inputs(model)
    _outputs_of_their_own(model)


def mend(module) -> str:
    """Mend a converted fx.GraphModule in place; a line saying what changed."""
    return (f"{fold_constant_slices(module)} constant Slice nodes folded, {fold_host_arguments(module)} "
            f"TopK/Tile/Reshape/Gather nodes given ints, {_layer_norm_shapes(module)} LayerNorm shapes set")


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


def _outputs_of_their_own(model) -> None:
    """Route each graph output made by a node with several outputs through an Identity placed right after that
    node. onnx2torch returns such a node's whole tuple as the graph output (DEIMv2's `scores`, TopK's values,
    came out as (values, indices)), and its inputs get the one output they name."""
    from onnx import helper  # noqa: PLC0415

    graph = model.graph
    outputs = {value.name for value in graph.output}
    taken = {*outputs, *(v.name for v in graph.input), *(t.name for t in graph.initializer),
             *(name for node in graph.node for name in (*node.input, *node.output))}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if len(node.output) < 2:
            continue
        for index, name in enumerate(node.output):
            if name in outputs:
                inner = _free_name(f"{name}_of_{node.op_type}", taken)
                node.output[index] = inner
                nodes.append(helper.make_node("Identity", [inner], [name], name=_free_name(f"{name}_identity", taken)))
    del graph.node[:]
    graph.node.extend(nodes)


def _free_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or it with the first counter that makes it a name no tensor or node has yet; taken from now on."""
    name, count = wanted, 0
    while name in taken:
        count += 1
        name = f"{wanted}_{count}"
    taken.add(name)
    return name


# -- CUDA-graph friendliness: constants that onnx2torch modules read on the host ------------------------------
SHAPE_OPERATORS = ("OnnxReshape", "OnnxResize", "OnnxResizeV10", "OnnxSlice", "OnnxExpand", "OnnxTile", "OnnxSplit13",
                   "_Split", "_IntArgument", "OnnxPadDynamic", "OnnxReduceSumDynamicAxes", "OnnxSqueezeDynamicAxes",
                   "OnnxUnsqueezeDynamicAxes", "OnnxCumSum", "OnnxConstantOfShape", "OnnxRange")
"""onnx2torch modules that read their non-data arguments (shapes, scales, bounds) on the host."""


def half_precision(module):
    """The module in FP16: `module.half()`, and onnx2torch's Casts to float32 (RT-DETR casts its anchor grids
    and masks) made Casts to float16, else they meet the FP16 weights in a MatMul as float32."""
    import torch  # noqa: PLC0415

    module = module.half()
    for cast in module.modules():
        if type(cast).__name__ == "OnnxCast" and cast.torch_dtype in (torch.float32, torch.float64):
            cast.torch_dtype = torch.float16
    return module


def keep_shape_constants_on_host(module) -> int:
    """Move the constant shape/scale arguments of SHAPE_OPERATORS nodes back to the CPU.

    Those modules call `.tolist()` or `torch.any()` on them; on the host that is free, on the GPU
    it is a synchronising copy per call that also breaks CUDA-graph capture. Returns how many moved.
    """
    import torch  # noqa: PLC0415

    if not isinstance(module, torch.fx.GraphModule):
        return 0  # TorchScript: nothing of onnx2torch's in it
    moved = 0
    for node in module.graph.nodes:
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ not in SHAPE_OPERATORS:
            continue
        for arg in (*node.args[1:], *node.kwargs.values()):  # Resize gets its scales and sizes by keyword
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
        _run_instead(module, node, "folded", ConstantSlice(flips, positive, negative), node.args[:1])
        folded += 1
    return _recompiled(module, folded)


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
    argument is a constant (RT-DETR's top 300), else read from the tensor on each call. A Gather with one
    constant index (DEIMv2's decoder takes coordinates apart that way) becomes `select`: indexing with a 0-d
    tensor reads it on the host, a sync per call that a CUDA graph cannot capture. Returns how many."""
    from onnx2torch.node_converters.gather import OnnxGather  # noqa: PLC0415 - the gpu extra's
    from onnx2torch.node_converters.reshape import OnnxReshape  # noqa: PLC0415
    from onnx2torch.node_converters.tile import OnnxTile  # noqa: PLC0415
    from onnx2torch.node_converters.topk import OnnxTopK  # noqa: PLC0415

    replaced = 0
    for node in list(module.graph.nodes):
        target = module.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(target, (OnnxTopK, OnnxTile, OnnxReshape, OnnxGather)) or len(node.args) < 2:
            continue
        value = _constant_value(module, node.args[1])
        if isinstance(target, OnnxGather) and (value is _NOT_CONSTANT or value.ndim != 0):
            continue  # tensor indices: indexed on the device
        fixed = None if value is _NOT_CONSTANT else [int(v) for v in value.reshape(-1)]
        if isinstance(target, OnnxGather):
            replacement = IntArgumentModule("select", fixed, dim=target._axis)  # noqa: SLF001 - onnx2torch's own
        elif isinstance(target, OnnxTopK):
            replacement = IntArgumentModule("topk", fixed, dim=target.dim, largest=target.largest, sorted=target.sorted)
        else:
            replacement = IntArgumentModule("repeat" if isinstance(target, OnnxTile) else "reshape", fixed)
        _run_instead(module, node, "ints", replacement, node.args if fixed is None else node.args[:1])
        replaced += 1
    return _recompiled(module, replaced)


def _run_instead(module, node, suffix: str, replacement, args: tuple) -> None:
    """Make the graph node call `replacement` (a new submodule beside the one it called) with `args`."""
    name = f"{node.target}_{suffix}"
    module.add_submodule(name, replacement)
    node.target, node.args = name, tuple(args)


def _recompiled(module, changed: int) -> int:
    """Drop what the changed nodes no longer use and regenerate the module's code; returns `changed`."""
    if changed:
        module.graph.eliminate_dead_code()
        module.recompile()
    return changed


@functools.cache
def _int_argument_module():
    import torch  # noqa: PLC0415

    class _IntArgument(torch.nn.Module):
        """`torch.topk(x, k)`, `x.repeat(repeats)`, `x.select(dim, index)` or ONNX Reshape (0 keeps that dim of
        x) with the ints fixed at conversion, or read from the tensor argument."""

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
            if self.op == "select":
                return x.select(self.options["dim"], ints[0])
            return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(ints)])

    return _IntArgument


def IntArgumentModule(op: str, fixed: list[int] | None, **options):  # noqa: N802 - lazy (torch is optional)
    return _int_argument_module()(op, fixed, **options)


_NOT_CONSTANT = object()


def _constant_value(module, arg):
    """A CPU tensor for a constant fx argument (initializer or Constant node), else _NOT_CONSTANT."""
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
