"""The converters onnx2torch 1.5 lacks, registered when it is imported (used by `torch_convert`): GridSample and
the opset-18 forms of Split, Pad, Resize and the reductions, where opset 18 only moved an attribute to an input
or added options. What onnx2torch converts wrongly is mended in `onnx2torch_fixes`.
"""
from __future__ import annotations

import functools

from pipeline.errors import EngineError, first_line


def import_onnx2torch():
    """onnx2torch with the opset-18 converters it lacks registered; EngineError when it cannot be imported
    (it imports torchvision, whose build must match torch's)."""
    try:
        import onnx2torch  # noqa: PLC0415 - the gpu extra's
    except (ImportError, RuntimeError, OSError) as exc:
        raise EngineError(f"engine 'torch' needs onnx2torch and a torchvision matching torch ({first_line(exc)}); "
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

    def split(node, graph):
        axis, outputs = node.attributes.get("axis", 0), len(node.output_values)
        if len(node.input_values) > 1 and node.input_values[1]:
            try:  # constant sizes (Ultralytics' C2f blocks): baked in, nothing read back from the GPU
                sizes = [int(v) for v in get_const_value(node.input_values[1], graph).tolist()]
            except KeyError:
                return result(node, SplitModule(axis, outputs))
            mapping = OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)
            return OperationConverterResult(torch_module=SplitModule(axis, outputs, sizes), onnx_mapping=mapping)
        return result(node, SplitModule(axis, outputs))

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
        """ONNX Split-18: sizes fixed at conversion or from the `split` input, else `num_outputs` chunks of
        ceil(len / n) (the last smaller)."""

        def __init__(self, axis: int, outputs: int, sizes: list[int] | None = None):
            super().__init__()
            self.axis, self.outputs, self.sizes = axis, outputs, sizes

        def forward(self, x, split=None):
            if self.sizes is not None:
                return torch.split(x, self.sizes, dim=self.axis)
            if split is not None:
                return torch.split(x, split.tolist(), dim=self.axis)
            return torch.split(x, -(-x.shape[self.axis] // self.outputs), dim=self.axis)

    return _Split


def SplitModule(axis: int, outputs: int, sizes: list[int] | None = None):  # noqa: N802 - lazy (torch is optional)
    return _split_module()(axis, outputs, sizes)


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
