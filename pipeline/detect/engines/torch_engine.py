"""PyTorch-CUDA engine: the model as a torch module (`torch_convert`: ONNX through onnx2torch, TorchScript,
torch.export), FP16 or FP32, on its own CUDA stream.

Device arrays cross in and out through DLPack (CuPy <-> torch, no host copy). The engine owns one
CUDA stream, shared by CuPy (`engine.stream`) and torch (an ExternalStream on the same handle), so
preprocessing, the network, the head decode and NMS queue in order without synchronising.

Speed: each batch size is rounded up to a bucket (powers of two up to max_batch) and, when possible,
captured once as a CUDA graph and replayed (launch overhead dominates small models like YOLOX-Nano).
A converted ONNX model reads shapes and constant arguments on the host, which a CUDA graph cannot
capture: `torch_convert` bakes constant slice bounds in and keeps shape arguments on the host, and each
bucket runs its own copy of a dynamic export with what follows from its input shape folded into
constants (`fx_specialize`). If capture still fails the engine runs eagerly and says why in `graph_status`. A model with a fixed batch dimension k (a static export) runs
every batch at k rows, like ONNX Runtime pads it.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan, batch_buckets
from pipeline.detect.engines import fx_specialize, torch_convert
from pipeline.detect.engines.base import bucket_for
from pipeline.detect.engines.onnx2torch_fixes import half_precision
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

FP32_HEADS = {"detr": "in FP16 a DEIM / D-FINE model picks other queries and refines their boxes differently (DEIMv2 "
                         "femto on a real frame: top score 0.39 instead of 0.55, half the detections changed)"}
"""Heads whose models the engine runs in FP32 whatever `precision` says, and why."""

_TORCH_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def create(model_path: Path, config: DetectorConfig, plan: DetectorPlan) -> "TorchEngine":
    """The registered factory of this engine (`pipeline.plugins`)."""
    return TorchEngine(model_path, config, plan.max_batch, channels_last=config.channels_last)


class TorchEngine:
    """Model file -> torch engine. Attributes: name, max_batch, input_dtype (numpy), stream (CuPy), graph_status.

    config.precision "fp16" (default) or "fp32"; "int8" runs FP16 (int8 needs TensorRT) with a warning; models
    with a head in FP32_HEADS (DEIM, D-FINE) always run FP32, with a warning.
    use_cuda_graphs: capture one graph per bucket on first use; False always runs eagerly.
    channels_last: weights (and so activations) in NHWC memory order, which tensor-core convolutions prefer;
    the input buffer stays NCHW (the first convolution reorders it).
    """

    name = "torch"

    def __init__(self, model_path: Path, config: DetectorConfig, max_batch: int, use_cuda_graphs: bool = True,
                 channels_last: bool = False):
        import cupy  # noqa: PLC0415 - GPU only
        import torch  # noqa: PLC0415 - GPU only

        if not torch.cuda.is_available():
            raise EngineError("engine 'torch' needs a CUDA GPU visible to PyTorch; use engine 'onnxruntime'")
        self._torch = torch
        self.device = torch.device("cuda", config.device)
        self.inputs, self.output_names, fixed_batch, head = _signature(model_path, config)
        self.max_batch = fixed_batch or max_batch
        self.buckets = [fixed_batch] if fixed_batch else batch_buckets(max_batch)
        precision = config.precision
        if precision == "int8":
            log.warning("engine 'torch' has no int8 path; running fp16 (int8 needs engine 'tensorrt')")
            precision = "fp16"
        if precision == "fp16" and head in FP32_HEADS:
            log.warning("engine 'torch': model '%s' runs in fp32, not fp16: %s", model_path.name, FP32_HEADS[head])
            precision = "fp32"
        self.precision = precision
        if precision == "fp32":
            # true FP32 (cuDNN and cuBLAS otherwise use TF32 on Ampere and later); process-wide switch
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.input_dtype = np.dtype(np.float16 if precision == "fp16" else np.float32)
        with cupy.cuda.Device(config.device):
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self._torch_stream = torch.cuda.ExternalStream(self.stream.ptr, device=self.device)
        self.module = _load_module(model_path, self.device, precision, channels_last)
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

    def twin(self) -> "TorchEngine":
        """Another engine on the same module (the weights are shared), with its own CUDA stream, input and
        output buffers and graphs: a second batch can be in flight on it while this one's runs."""
        import cupy  # noqa: PLC0415 - GPU only

        twin = copy.copy(self)
        with cupy.cuda.Device(self.device.index):
            twin.stream = cupy.cuda.Stream(non_blocking=True)
        twin._torch_stream = self._torch.cuda.ExternalStream(twin.stream.ptr, device=self.device)
        twin._slots = {}
        if twin.use_cuda_graphs:
            twin.graph_status = "not captured yet"
            twin.warmup()
        return twin

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
        with torch.cuda.stream(engine._torch_stream):
            self.module = fx_specialize.specialize(engine.module, list(self.inputs.values()))
        self.graph = None
        self.output_views: list | None = None  # the graph's static outputs, as CuPy views

    def _forward(self) -> list:
        torch = self.engine._torch
        with torch.inference_mode():
            result = self.module(*self.inputs.values())
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


def _signature(model_path: Path, config: DetectorConfig) -> tuple[list[tuple[str, tuple, str]], list[str], int | None,
                                                                  str | None]:
    """Inputs as (name, shape without batch, dtype name), output names, the fixed batch size (None when dynamic)
    and the head (None when the file does not tell), from the model file; a dynamic image size is the
    detector's (its input_size, else the metadata's)."""
    signature, metadata = torch_convert.read_model_info(model_path)
    try:
        width, height = input_size(signature, config, metadata)
    except ConfigError as exc:
        raise EngineError(str(exc)) from exc
    inputs = []
    for value in signature.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in value.shape[1:])
        if len(shape) == 3:
            shape = (shape[0] or 3, height, width)
        if None in shape:
            raise EngineError(f"model '{model_path}' input '{value.name}' has unknown dims {list(value.shape)}; the "
                              "torch engine needs them")
        inputs.append((value.name, shape, _TORCH_DTYPES.get(value.dtype, "float32")))
    batch = signature.inputs[0].shape[0] if signature.inputs else None
    fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
    try:  # the head only decides FP32 here; the detector says what is wrong with one it cannot tell
        head = detect_head(signature, metadata, config.head)
    except ConfigError:
        head = None
    return inputs, [o.name for o in signature.outputs], fixed_batch, head


def _load_module(model_path: Path, device, precision: str, channels_last: bool = False):
    """The converted module (`torch_convert`) on `device`, FP16 when asked (`half_precision`), eval mode; shape
    constants kept on the host; channels-last weights when asked."""
    import torch  # noqa: PLC0415 - GPU only

    module = torch_convert.take_module(model_path, device)
    module = half_precision(module) if precision == "fp16" else module
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    log.info("torch engine: %d shape constants kept on the host", torch_convert.keep_shape_constants_on_host(module))
    return module
