"""A converted ONNX model fixed to one input shape, so that a CUDA graph can capture it.

A dynamic export computes shapes at run time: `Shape` reads the input's size into a tensor on the device,
then Gather, Concat, Range, ConstantOfShape and friends turn it into reshape targets and anchor grids.
Eagerly that is a host-to-device copy and a device-to-host read per call; inside a CUDA graph capture it
fails ("Cannot copy between CPU and CUDA tensors during CUDA graph capture"). The torch engine runs each
batch size (bucket) at one fixed shape anyway, so for each bucket everything that depends only on the
input's shape and on constants is computed once, here, and kept as constants of a copy of the module (its
layers shared with the original): the reshape targets and slice bounds become ints baked into their
nodes (`onnx2torch_fixes.mend`), the other shape arguments stay on the host, and the anchor grids stay
on the device. What is left of the graph reads no shape, and runs the same numbers.

    fixed = specialize(module, [images])    # images: a tensor of the bucket's exact shape, on the device
"""
from __future__ import annotations

import logging

from pipeline.detect.engines.onnx2torch_fixes import keep_shape_constants_on_host, mend

log = logging.getLogger(__name__)

SHAPE_SOURCES = ("OnnxShape",)
"""onnx2torch modules whose output depends on the shape of their input, not its values."""


def specialize(module, inputs: list):
    """A copy of the fx module `module` for inputs of exactly these shapes (`inputs`: example tensors on the
    module's device), with every value computed from the input's shape folded into a constant; any other
    module, or one with no shape arithmetic, is returned as it is."""
    import torch  # noqa: PLC0415 - the gpu extra's

    if not isinstance(module, torch.fx.GraphModule):
        return module
    derived = _shape_derived(module)
    boundary = [node for node in derived if any(user not in derived for user in node.users)]
    if not boundary:
        return module
    with torch.inference_mode():
        values = _Recorder(module, set(boundary)).values(*inputs)
    graph = torch.fx.Graph()
    copies: dict = {}
    graph.output(graph.graph_copy(module.graph, copies))
    fixed = torch.fx.GraphModule(module, graph)
    folded, derived_copies = 0, {copies[node] for node in derived}
    for node in boundary:
        value = values.get(node)
        if not isinstance(value, torch.Tensor):
            continue  # a tuple or a Python number: left to run (no shape read reaches the device through it)
        for user in [user for user in copies[node].users if user.op != "output" and user not in derived_copies]:
            name = f"_shape_constant_{folded}"
            fixed.register_buffer(name, value.clone())
            with fixed.graph.inserting_before(user):
                user.replace_input_with(copies[node], fixed.graph.get_attr(name))
            folded += 1
    fixed.graph.eliminate_dead_code()
    fixed.recompile()
    log.debug("specialised for %s: %d shape values folded; %s; %d shape constants on the host",
              [tuple(t.shape) for t in inputs], folded, mend(fixed), keep_shape_constants_on_host(fixed))
    return fixed


def _shape_derived(module) -> list:
    """The nodes whose values follow from the input's shape and constants alone, and depend on a shape
    (constants alone were folded at conversion), in graph order."""
    constant, derived = set(), {}  # derived: a dict, for its order
    for node in module.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        inputs = node.all_input_nodes
        if node.op == "call_module" and type(module.get_submodule(node.target)).__name__ in SHAPE_SOURCES:
            derived[node] = None
        elif node.op == "get_attr" or all(n in constant for n in inputs):
            constant.add(node)
        elif all(n in constant or n in derived for n in inputs):
            derived[node] = None
    return list(derived)


def _recorder_class():
    import torch  # noqa: PLC0415

    class Recorder(torch.fx.Interpreter):
        """Runs the module once, keeping the values of the nodes asked for."""

        def __init__(self, module, wanted: set):
            super().__init__(module)
            self.wanted, self.recorded = wanted, {}

        def run_node(self, n):
            result = super().run_node(n)
            if n in self.wanted:
                self.recorded[n] = result
            return result

        def values(self, *inputs) -> dict:
            self.run(*inputs)
            return self.recorded

    return Recorder


def _Recorder(module, wanted: set):  # noqa: N802 - builds the Interpreter subclass lazily (torch is optional)
    return _recorder_class()(module, wanted)
