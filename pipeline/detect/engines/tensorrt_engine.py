"""TensorRT engine, written to the TensorRT 10 Python API: build from ONNX once, cache, run on the pipeline's stream.

Build: `Builder` -> network from `OnnxParser` -> one optimisation profile (batch 1 / opt / max)
-> FP16 (or INT8 with an `IInt8EntropyCalibrator2` fed by frames from the configured streams, its
cache on disk) -> `build_serialized_network`, with a timing cache on disk. The engine file is keyed
by ONNX hash + TensorRT version + GPU + compute capability + precision + profile (trt_keys.py) and
rebuilt whenever that key changes. Run: `set_input_shape`, `set_tensor_address` for every I/O
tensor, `execute_async_v3` on the engine's CUDA stream (shared with CuPy, like the torch engine).

TensorRT cannot be installed on the machines this project is developed on, so this module is
imported lazily, has never been executed, and its pure logic lives in trt_keys.py (keys, profiles,
calibration batching) and trt_bindings.py (a profile per input and the output shapes each head implies,
from the signature and metadata: Ultralytics [B, 4+nc, N] with symbolic dims, YOLOv10/YOLO26 and RT-DETR
[B, 300, 6], DEIM's labels/boxes/scores with its second input), both unit-tested.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan, batch_buckets
from pipeline.detect.engines import trt_bindings, trt_keys
from pipeline.detect.engines.base import bucket_for
from pipeline.detect.engines.onnxruntime import read_model_info
from pipeline.detect.names import names_from_config, names_from_metadata
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError, EngineError
from pipeline.files import write_atomic

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 4 << 30


def create(model_path: Path, config: DetectorConfig, plan: DetectorPlan) -> "TensorRTEngine":
    """The registered factory of this engine (`pipeline.plugins`)."""
    return TensorRTEngine(model_path, config, plan.max_batch)


class TensorRTEngine:
    """Attributes: name, max_batch, input_dtype (numpy), stream (CuPy), key (trt_keys.EngineKey), built (bool).

    calibration_images: (C, H, W) float32 preprocessed frames for INT8 (used only when no
    calibration cache exists); opt_batch: the batch TensorRT tunes for (default max_batch).
    """

    name = "tensorrt"

    def __init__(self, model_path: Path, config: DetectorConfig, max_batch: int,
                 calibration_images: Iterable[np.ndarray] | None = None, opt_batch: int | None = None):
        import cupy  # noqa: PLC0415 - GPU only
        import tensorrt as trt  # noqa: PLC0415 - optional, see module docstring

        self._trt = trt
        self.model_path = Path(model_path).expanduser()
        if not self.model_path.is_file():
            raise EngineError(f"model file '{self.model_path}' does not exist; set detector.model to an ONNX file")
        self.logger = trt.Logger(trt.Logger.WARNING)
        with cupy.cuda.Device(config.device):
            self.stream = cupy.cuda.Stream(non_blocking=True)
            props = cupy.cuda.runtime.getDeviceProperties(config.device)
        gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        self.bindings = _bindings(self.model_path, config, max_batch, opt_batch)
        self.max_batch = self.bindings.fixed_batch or max_batch  # a static export runs every batch at its own
        input_name, chw = self.bindings.image_input, self.bindings.profiles[0].opt[1:]
        if config.precision == "int8" and len(self.bindings.profiles) > 1:
            raise EngineError(f"int8 calibration feeds the image input only, and '{self.model_path}' has "
                              f"{len(self.bindings.profiles)} inputs; use precision fp16")
        preprocess = config.preprocess.model_dump(mode="json", exclude_defaults=True)
        self.key = trt_keys.EngineKey(
            onnx_sha256=trt_keys.file_sha256(self.model_path), tensorrt_version=trt.__version__,
            gpu_name=gpu_name, compute_capability=f"{props['major']}.{props['minor']}",
            precision=config.precision, profiles=self.bindings.profiles,
            calibration=trt_keys.calibration_of(config.head, preprocess) if config.precision == "int8" else "",
        )  # fmt: skip
        cache_dir = Path(config.engine_cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.paths = trt_keys.cache_paths(cache_dir, self.model_path, self.key, config.calibration_frames)
        self.built = not self.paths.engine.is_file()
        if self.built:
            self._build(config, calibration_images)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.paths.engine.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT cannot load '{self.paths.engine}'; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self._io = _io_tensors(trt, self.engine)
        self.input_dtype = np.dtype(self._io[input_name][1])
        self._input_name = input_name
        self._chw = chw
        self._buffers: dict[str, Any] = {}
        # Buffers hold a full max_batch: their shapes as TensorRT infers them with every input at max_batch
        # (the engine reports -1 for dynamic dimensions, spatial ones included when the ONNX has them).
        self._set_input_shapes(self.max_batch)
        self._buffer_shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self._io}
        try:
            trt_bindings.check_outputs(self.bindings, self._buffer_shapes, self.max_batch)
        except ValueError as exc:
            raise EngineError(f"'{self.model_path}': {exc}") from exc
        log.info("tensorrt engine %s (%s, %s)", self.paths.engine, "built" if self.built else "cached", self.key.describe())

    def _build(self, config: DetectorConfig, calibration_images) -> None:
        """Parse the ONNX file, build with the key's profile and precision, write engine + caches."""
        trt = self._trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.model_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse '{self.model_path}': {errors}")
        build = builder.create_builder_config()
        build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        profile = builder.create_optimization_profile()
        for p in self.key.profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        build.add_optimization_profile(profile)
        if config.precision in ("fp16", "int8"):
            build.set_flag(trt.BuilderFlag.FP16)
        if config.precision == "int8":
            build.set_flag(trt.BuilderFlag.INT8)
            build.int8_calibrator = self._calibrator(calibration_images)
            build.set_calibration_profile(profile)
        timing = build.create_timing_cache(self.paths.timing.read_bytes() if self.paths.timing.is_file() else b"")
        build.set_timing_cache(timing, ignore_mismatch=False)
        log.info("building TensorRT engine for %s (%s); this takes minutes once", self.model_path, self.key.describe())
        serialized = builder.build_serialized_network(network, build)
        if serialized is None:
            raise EngineError(f"TensorRT failed to build '{self.model_path}' ({self.key.describe()}); see the log above")
        # Whole files: instances sharing the cache folder (`run --gpus` on alike GPUs) build at once and read them.
        write_atomic(self.paths.engine, bytes(serialized))
        write_atomic(self.paths.timing, bytes(timing.serialize()))
        write_atomic(self.paths.meta, json.dumps({"key": self.key.digest(), "describe": self.key.describe()}).encode())

    def _calibrator(self, images):
        cache = self.paths.calibration
        if images is None and not cache.is_file():
            raise EngineError(
                f"int8 needs calibration frames for '{self.model_path}': run `build-engine` with the config "
                f"(it samples detector.calibration_frames from the streams) or use precision fp16"
            )
        profile = self.key.profiles[0]
        batches = trt_keys.calibration_batches(images or [], profile.opt[0], 1 << 30)
        return make_calibrator(self._trt, batches, profile.opt[0], cache)

    def rows_for(self, rows: int) -> int:
        """The batch size a batch of `rows` rows runs at: rounded up to a power of two (or max_batch), so
        post-processing sees few shapes, or a static export's batch; the rows above `rows` are padding."""
        fixed = self.bindings.fixed_batch
        return bucket_for(rows, [fixed] if fixed else batch_buckets(self.max_batch))

    def input_buffer(self, rows: int, name: str | None = None):
        """A (rows, C, H, W) CuPy view of the engine's own input, to write into in place."""
        return self._buffer(name or self._input_name, rows)[:rows]

    def _buffer(self, name: str, rows: int):
        import cupy  # noqa: PLC0415 - GPU only

        if name not in self._buffers:
            self._buffers[name] = cupy.empty(self._buffer_shapes[name], self._io[name][1])
        return self._buffers[name]

    def _set_input_shapes(self, rows: int) -> None:
        """Give every input its concrete shape for `rows` rows (TensorRT then infers the outputs')."""
        for name, (shape, _) in self._io.items():
            if self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT:
                chw = self._chw if name == self._input_name else None
                self.context.set_input_shape(name, trt_keys.input_shape(shape, rows, chw))

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one batch of B <= max_batch rows on `self.stream`; returns CuPy outputs (views, valid until next call)."""
        import cupy  # noqa: PLC0415 - GPU only

        rows = int(next(iter(inputs.values())).shape[0])
        if rows > self.max_batch:
            raise EngineError(f"tensorrt: batch of {rows} exceeds the engine's max_batch {self.max_batch}")
        trt = self._trt
        outputs = {}
        self._set_input_shapes(self.bindings.fixed_batch or rows)
        with self.stream:
            for name, (_, dtype) in self._io.items():
                target = self._buffer(name, rows)
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    value = inputs[name]
                    if not (isinstance(value, cupy.ndarray) and value.data.ptr == target.data.ptr):
                        target[:rows] = cupy.asarray(value).astype(dtype, copy=False)
                else:
                    outputs[name] = target[:rows]
                self.context.set_tensor_address(name, target.data.ptr)
            if not self.context.execute_async_v3(self.stream.ptr):
                raise EngineError(f"tensorrt: execute_async_v3 failed for '{self.model_path}'")
            # Converted on the engine's stream, so the copy waits for the outputs to be written.
            return {name: out.astype(np.float32) if out.dtype == np.float16 else out for name, out in outputs.items()}

    def close(self) -> None:
        self.stream.synchronize()
        self._buffers.clear()
        self.context = None
        self.engine = None


def make_calibrator(trt, batches, batch_size: int, cache_path: Path):
    """An IInt8EntropyCalibrator2 that uploads each host batch to the device and reads/writes `cache_path`."""
    import cupy  # noqa: PLC0415 - GPU only

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device = None  # keeps the current batch alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._device = cupy.asarray(batch)
            return [int(self._device.data.ptr)] * len(names)

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            write_atomic(cache_path, bytes(cache))

    return EntropyCalibrator()


def _io_tensors(trt, engine) -> dict[str, tuple[tuple, Any]]:
    """name -> (shape with -1 for dynamic dims, numpy dtype) for every I/O tensor, in engine order."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return {n: (tuple(engine.get_tensor_shape(n)), trt.nptype(engine.get_tensor_dtype(n))) for n in names}


def _bindings(model_path: Path, config: DetectorConfig, max_batch: int, opt_batch: int | None) -> trt_bindings.Bindings:
    """The engine's profiles and expected outputs from the ONNX file's signature and metadata (`trt_bindings`)."""
    signature, metadata = read_model_info(model_path)
    names = names_from_metadata(metadata) or names_from_config(config.class_names)
    try:
        head = detect_head(signature, metadata, config.head)
        return trt_bindings.plan_bindings(signature, head, input_size(signature, config, metadata),
                                          len(names) if names else None, max_batch, opt_batch)
    except (ConfigError, ValueError) as exc:
        raise EngineError(f"TensorRT cannot plan the inputs and outputs of '{model_path}': {exc}") from exc
