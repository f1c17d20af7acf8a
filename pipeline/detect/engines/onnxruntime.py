"""ONNX Runtime engine (CPU, or the CUDA execution provider when this onnxruntime build has it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan
from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.errors import EngineError
from pipeline.machine import cpu_cores
from pipeline.plugins import FORMAT_NAMES, model_format

_STATE = ort.capi.onnxruntime_pybind11_state
LOAD_ERRORS = (RuntimeError, ValueError, _STATE.Fail, _STATE.InvalidProtobuf, _STATE.InvalidGraph,
               _STATE.InvalidArgument, _STATE.NoSuchFile, _STATE.NotImplemented, _STATE.RuntimeException)
"""What onnxruntime raises for a file it cannot load (its own exceptions derive from Exception only)."""


def open_session(model_path: Path, providers: list, threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for `model_path`; EngineError names the file when it cannot be loaded."""
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise EngineError(f"model file '{path}' {'is a folder' if path.is_dir() else 'does not exist'}; set "
                          "detector.model to an ONNX file")
    fmt = model_format(path)
    if fmt != "onnx":
        raise EngineError(f"'{path}' is a {FORMAT_NAMES[fmt]} file: ONNX Runtime cannot run it; use engine 'torch' "
                          "(a CUDA GPU), or export the model to ONNX")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except LOAD_ERRORS as exc:
        raise EngineError(f"onnxruntime cannot load '{path}' ({exc}); set detector.model to an ONNX model file") from exc


def signature_of(session: ort.InferenceSession) -> ModelSignature:
    def describe(args):
        return tuple(TensorInfo(a.name, tuple(a.shape), a.type) for a in args)

    return ModelSignature(describe(session.get_inputs()), describe(session.get_outputs()))


def read_model_info(model_path: Path) -> tuple[ModelSignature, dict[str, str]]:
    """The ONNX signature (input/output names and shapes) and custom metadata of a model file."""
    session = open_session(model_path, ["CPUExecutionProvider"], threads=1)
    return signature_of(session), dict(session.get_modelmeta().custom_metadata_map)


def create(model_path: Path, config: DetectorConfig, plan: DetectorPlan) -> "OnnxRuntimeEngine":
    """The registered factory of engine 'onnxruntime' (`pipeline.plugins`)."""
    return OnnxRuntimeEngine(model_path, config, plan.max_batch, threads=plan.threads)


def create_cuda(model_path: Path, config: DetectorConfig, plan: DetectorPlan) -> "OnnxRuntimeEngine":
    """The registered factory of engine 'onnxruntime-cuda'."""
    return OnnxRuntimeEngine(model_path, config, plan.max_batch, use_cuda=True)


class OnnxRuntimeEngine:
    """ONNX Runtime session per model. A model with a fixed batch dimension k reports max_batch = k
    and pads shorter batches (the padded rows' outputs are dropped); k = 1 means row by row."""

    def __init__(self, model_path: Path, config: DetectorConfig, max_batch: int, use_cuda: bool = False,
                 threads: int | None = None):
        """threads: CPU threads of one run (None: every core); the plan gives each of its workers a share."""
        providers: list = ["CPUExecutionProvider"]
        if use_cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError("engine 'onnxruntime-cuda' needs onnxruntime-gpu; install it or use engine 'onnxruntime'")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": config.device}))
        self.name = "onnxruntime-cuda" if use_cuda else "onnxruntime"
        self.session = open_session(model_path, providers, threads=threads)
        self.signature = signature_of(self.session)
        batch_dim = self.signature.inputs[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.max_batch = self.fixed_batch or max_batch
        self._output_names = [o.name for o in self.signature.outputs]
        # a half-precision input (Ultralytics half=True) gets the float32 images cast; its outputs go on as float32
        self._half = {i.name for i in self.signature.inputs if i.dtype == "tensor(float16)"}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of B <= max_batch rows; returns every output by name, B rows each."""
        rows = next(iter(inputs.values())).shape[0]
        if rows > self.max_batch:
            raise EngineError(f"{self.name}: batch of {rows} exceeds the engine's max_batch {self.max_batch}")
        if self.fixed_batch and rows < self.fixed_batch:
            inputs = {k: _pad_rows(v, self.fixed_batch) for k, v in inputs.items()}
        if self._half:
            inputs = {k: v.astype(np.float16) if k in self._half else v for k, v in inputs.items()}
        try:
            outputs = self.session.run(self._output_names, inputs)
        except (RuntimeError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument) as exc:
            raise EngineError(f"{self.name} failed on a batch of {rows}: {exc}") from exc
        return {name: (out[:rows].astype(np.float32) if out.dtype == np.float16 else out[:rows])
                for name, out in zip(self._output_names, outputs)}

    def close(self) -> None:
        self.session = None


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last row so the batch has `rows` rows (a fixed-batch model needs them all)."""
    missing = rows - array.shape[0]
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])
