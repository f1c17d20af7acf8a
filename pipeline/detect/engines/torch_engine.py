"""PyTorch-CUDA engine: the ONNX model converted to torch (onnx2torch), FP16 or FP32, on its own CUDA stream.

Device arrays cross in and out through DLPack (CuPy <-> torch, no host copy). The engine owns one
CUDA stream, shared by CuPy (`engine.stream`) and torch (an ExternalStream on the same handle), so
preprocessing, the network, the head decode and NMS queue in order without synchronising.

Speed: each batch size is rounded up to a bucket (powers of two up to max_batch) and, when possible,
captured once as a CUDA graph and replayed (launch overhead dominates small models like YOLOX-Nano).
onnx2torch's Slice reads its constant bounds from the device on every call, which a CUDA graph
cannot capture; `fold_constant_slices` rewrites those nodes with the bounds baked in. If capture
still fails the engine runs eagerly and says why in `graph_status`.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan, batch_buckets
from pipeline.detect.engines.base import bucket_for
from pipeline.errors import EngineError

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def create(model_path: Path, config: DetectorConfig, plan: DetectorPlan) -> "TorchEngine":
    """The registered factory of this engine (`pipeline.plugins`)."""
    return TorchEngine(model_path, config, plan.max_batch)


class TorchEngine:
    """ONNX -> torch engine. Attributes: name, max_batch, input_dtype (numpy), stream (CuPy), graph_status.

    config.precision "fp16" (default) or "fp32"; "int8" runs FP16 (int8 needs TensorRT) with a warning.
    use_cuda_graphs: capture one graph per bucket on first use; False always runs eagerly.
    """

    name = "torch"

    def __init__(self, model_path: Path, config: DetectorConfig, max_batch: int, use_cuda_graphs: bool = True):
        import cupy  # noqa: PLC0415 - GPU only
        import torch  # noqa: PLC0415 - GPU only

        if not torch.cuda.is_available():
            raise EngineError("engine 'torch' needs a CUDA GPU visible to PyTorch; use engine 'onnxruntime'")
        self._torch = torch
        self.device = torch.device("cuda", config.device)
        self.max_batch = max_batch
        self.buckets = batch_buckets(max_batch)
        precision = config.precision
        if precision == "int8":
            log.warning("engine 'torch' has no int8 path; running fp16 (int8 needs engine 'tensorrt')")
            precision = "fp16"
        self.precision = precision
        if precision == "fp32":
            # true FP32 (cuDNN and cuBLAS otherwise use TF32 on Ampere and later); process-wide switch
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.input_dtype = np.dtype(np.float16 if precision == "fp16" else np.float32)
        with cupy.cuda.Device(config.device):
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self._torch_stream = torch.cuda.ExternalStream(self.stream.ptr, device=self.device)
        self.inputs, self.output_names = _signature(model_path, config)
        self.module = _load_module(model_path, self.device, precision)
        self.use_cuda_graphs = use_cuda_graphs
        self.graph_status = "not captured yet" if use_cuda_graphs else "disabled"
        self._slots: dict[int, _Slot] = {}
        if use_cuda_graphs:
            # Capture every bucket now, before decode threads run: in the running pipeline other
            # threads' CUDA calls (NVDEC, CuPy allocations) invalidated a capture taken on first use.
            self.warmup()

    def rows_for(self, rows: int) -> int:
        """The batch size a batch of `rows` rows runs at (its bucket; the rows above `rows` are padding)."""
        return bucket_for(rows, self.buckets)

    def input_buffer(self, rows: int, name: str | None = None):
        """A (rows, ...) CuPy view of the engine's own input for `rows` rows, to write into in place.

        Passing the view back to `infer` skips a copy (and replays a CUDA graph when one exists).
        """
        slot = self._slot(bucket_for(rows, self.buckets))
        return slot.input_views[name or self.inputs[0][0]][:rows]

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one batch; `inputs` by name, (B, ...) CuPy or numpy arrays; returns CuPy outputs (B, ...).

        CuPy inputs must be ready for `self.stream`: written on it, or synchronised (nothing here waits
        for other streams). Numpy inputs are uploaded on it.

        Outputs are views of engine-owned buffers, valid until the next `infer`; floating outputs are
        float32. Everything is queued on `self.stream`; nothing is synchronised here.
        """
        import cupy  # noqa: PLC0415 - GPU only

        rows = int(next(iter(inputs.values())).shape[0])
        slot = self._slot(bucket_for(rows, self.buckets))
        with cupy.cuda.Device(self.device.index), self.stream:
            for name, _, _ in self.inputs:
                target = slot.input_views[name]
                value = inputs[name]
                if not (isinstance(value, cupy.ndarray) and value.data.ptr == target.data.ptr):
                    target[:rows] = cupy.asarray(value).astype(target.dtype, copy=False)
            outputs = slot.run()
        return {name: out[:rows] for name, out in zip(self.output_names, outputs)}

    def warmup(self, rows: list[int] | None = None) -> None:
        """Prepare (and capture) the buckets for these batch sizes now rather than on first use."""
        for size in sorted({bucket_for(r, self.buckets) for r in (rows or self.buckets)}):
            self._slot(size).run()
        self.stream.synchronize()

    def _slot(self, bucket: int) -> "_Slot":
        if bucket not in self._slots:
            slot = _Slot(self, bucket)
            if self.use_cuda_graphs:
                self.graph_status = slot.capture()
            self._slots[bucket] = slot
        return self._slots[bucket]

    def close(self) -> None:
        """Drop the module, graphs and buffers (after the stream finished with them)."""
        self.stream.synchronize()
        self._slots.clear()
        self.module = None


class _Slot:
    """Static inputs, outputs and (optionally) a captured CUDA graph for one bucket size."""

    def __init__(self, engine: TorchEngine, bucket: int):
        import cupy  # noqa: PLC0415 - GPU only

        torch = engine._torch
        self.engine = engine
        self.inputs = {}
        for name, shape, dtype in engine.inputs:
            torch_dtype = getattr(torch, dtype)
            if torch_dtype.is_floating_point:
                torch_dtype = torch.float16 if engine.precision == "fp16" else torch.float32
            self.inputs[name] = torch.zeros((bucket, *shape), dtype=torch_dtype, device=engine.device)
        # CuPy views made once: each DLPack exchange is a few CUDA calls, each a wait for the interpreter lock
        self.input_views = {name: cupy.from_dlpack(tensor) for name, tensor in self.inputs.items()}
        self.graph = None
        self.output_views: list | None = None  # the graph's static outputs, as CuPy views

    def _forward(self) -> list:
        torch = self.engine._torch
        with torch.inference_mode():
            result = self.engine.module(*self.inputs.values())
        result = list(result) if isinstance(result, (tuple, list)) else [result]
        return [r.float() if r.is_floating_point() else r for r in result]

    def run(self) -> list:
        """The outputs as CuPy arrays (B, ...), queued on the engine's stream."""
        import cupy  # noqa: PLC0415 - GPU only

        torch = self.engine._torch
        with torch.cuda.stream(self.engine._torch_stream):
            if self.graph is not None:
                self.graph.replay()
                return self.output_views
            return [cupy.from_dlpack(out) for out in self._forward()]

    def capture(self) -> str:
        """Capture the forward pass as a CUDA graph; returns a status line (captured, or why not)."""
        import cupy  # noqa: PLC0415 - GPU only

        torch = self.engine._torch
        stream = self.engine._torch_stream
        try:
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up outside capture: cuDNN picks its algorithms here
                    self._forward()
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                outputs = self._forward()
        except RuntimeError as exc:
            torch.cuda.synchronize(self.engine.device)
            reason = str(exc).splitlines()[0][:200]
            log.warning("torch engine: CUDA graph capture failed (%s); running eagerly", reason)
            self.engine.use_cuda_graphs = False
            return f"eager (capture failed: {reason})"
        self.graph, self.output_views = graph, [cupy.from_dlpack(out) for out in outputs]
        return "cuda graphs"


def _signature(model_path: Path, config: DetectorConfig) -> tuple[list[tuple[str, tuple, str]], list[str]]:
    """Inputs as (name, shape without batch, dtype name) and output names, from the ONNX file."""
    import onnx  # noqa: PLC0415 - GPU extra

    path = Path(model_path).expanduser()
    if not path.is_file():
        raise EngineError(f"model file '{path}' does not exist; set detector.model to an ONNX file")
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        elem = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        shape = tuple(dims[1:])
        if len(shape) == 3 and None in shape[1:]:
            if config.input_size is None:
                raise EngineError(f"model '{path}' has a dynamic input size; set detector.input_size: [width, height]")
            shape = (shape[0] or 3, config.input_size[1], config.input_size[0])
        if None in shape:
            raise EngineError(f"model '{path}' input '{value.name}' has unknown dims {dims}; the torch engine needs them")
        inputs.append((value.name, shape, elem))
    return inputs, [o.name for o in graph.output]


def _load_module(model_path: Path, device, precision: str):
    """onnx2torch conversion, constant slices folded, moved to `device`, FP16 when asked, eval mode."""
    try:
        from onnx2torch import convert  # noqa: PLC0415 - GPU extra
    except ImportError as exc:
        raise EngineError(f"engine 'torch' needs onnx2torch ({exc}); install the gpu extra") from exc
    try:
        module = convert(str(Path(model_path).expanduser()))
    except (NotImplementedError, RuntimeError, KeyError, ValueError) as exc:
        raise EngineError(f"onnx2torch cannot convert '{model_path}': {exc}; use engine 'onnxruntime'") from exc
    folded = fold_constant_slices(module)
    log.info("torch engine: %d constant Slice nodes folded", folded)
    module = module.to(device).eval()
    module = module.half() if precision == "fp16" else module
    log.info("torch engine: %d shape constants kept on the host", keep_shape_constants_on_host(module))
    return module


SHAPE_OPERATORS = ("OnnxReshape", "OnnxResize", "OnnxResizeV10", "OnnxSlice", "OnnxExpand", "OnnxTile")
"""onnx2torch modules that read their non-data arguments (shapes, scales, bounds) on the host."""


def keep_shape_constants_on_host(module) -> int:
    """Move the constant shape/scale arguments of SHAPE_OPERATORS nodes back to the CPU.

    Those modules call `.tolist()` or `torch.any()` on them; on the host that is free, on the GPU
    it is a synchronising copy per call that also breaks CUDA-graph capture. Returns how many moved.
    """
    moved = 0
    for node in module.graph.nodes:
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
    from onnx2torch.node_converters.slice import OnnxSlice, _get_slices  # noqa: PLC0415 - GPU extra

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
    import torch  # noqa: PLC0415 - GPU only

    return tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))


@functools.cache
def _constant_slice_module():
    import torch  # noqa: PLC0415 - GPU only

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
