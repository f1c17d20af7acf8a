"""`build-engine`: the TensorRT engine of a config, built ahead of time, with INT8 calibration frames sampled
from the configured streams and preprocessed like live frames."""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import resolve
from pipeline.detect import preprocess
from pipeline.detect.detector import _preprocess_spec
from pipeline.detect.engines.onnxruntime import read_model_info
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError, EngineError, PipelineError
from pipeline.sources import open_reader
from pipeline.types import Frame, frame_to_rgb

log = logging.getLogger(__name__)


def sample_calibration_inputs(config: PipelineConfig, every: int = 5, per_stream_s: float = 30.0) -> list[np.ndarray]:
    """Up to `detector.calibration_frames` (C, H, W) float32 model inputs, spread over the streams.

    Every `every`-th frame is taken (neighbouring frames teach the calibrator little); a stream
    gives at most `per_stream_s` seconds of reading, and one that cannot be read is skipped. ConfigError
    without streams, EngineError when none of them gave a frame: an engine calibrated on nothing is useless.
    """
    if not config.streams:
        raise ConfigError("streams: int8 calibrates on frames of the configured streams, and there are none; add "
                          "the cameras the engine will see, or use precision fp16")
    detector = config.detector
    signature, metadata = read_model_info(detector.model)
    head = detect_head(signature, metadata, detector.head)
    spec = _preprocess_spec(head, input_size(signature, detector, metadata), detector)
    per_stream = math.ceil(detector.calibration_frames / len(config.streams))
    inputs: list[np.ndarray] = []
    for stream in config.streams:
        images = _sample_stream(stream.model_copy(update={"decode": "cpu"}), per_stream, every, per_stream_s)
        for start in range(0, len(images), 16):
            chunk = images[start : start + 16]
            batch = preprocess.allocate(len(chunk), spec)
            preprocess.preprocess_into(chunk, spec, batch)
            inputs.extend(batch)
    if not inputs:
        names = ", ".join(f"'{stream.id}'" for stream in config.streams)
        raise EngineError(f"int8 calibration read no frames from streams {names} (see the warnings above); make "
                          "them readable from this machine, or use precision fp16")
    log.info("calibration: %d frames from %d streams", len(inputs), len(config.streams))
    return inputs[: detector.calibration_frames]


def _sample_stream(stream: StreamConfig, count: int, every: int, limit_s: float) -> list:
    reader = open_reader(stream)
    taken: list = []
    deadline = time.monotonic() + limit_s
    try:
        for i, decoded in enumerate(reader.frames()):
            if i % every == 0:
                taken.append(_host_image(decoded))
            if len(taken) >= count or time.monotonic() > deadline:
                break
    except PipelineError as exc:
        log.warning("calibration: stream '%s' skipped: %s", stream.id, exc)
    finally:
        reader.close()
    return taken


def _host_image(decoded):
    frame = Frame("calibration", 0, decoded.pts_ns, 0, decoded.image, decoded.width, decoded.height, decoded.pixel_format)
    return frame.image if frame.pixel_format in ("rgb24", "avframe") else frame_to_rgb(frame)


def build_engine_for_config(config) -> str:
    """`build-engine`: build (or find cached) the TensorRT engine a PipelineConfig will use; returns where it is.

    INT8 samples `detector.calibration_frames` frames from the configured streams first.
    """
    from pipeline.detect.engines.tensorrt_engine import TensorRTEngine  # noqa: PLC0415 - imports TensorRT

    try:
        import cupy  # noqa: F401, PLC0415 - checked first so the error says what is missing
        import tensorrt  # noqa: F401, PLC0415
    except ImportError as exc:
        raise EngineError(
            f"build-engine needs TensorRT and CuPy on an NVIDIA GPU machine ({exc}); "
            "install the project's gpu and tensorrt extras there"
        ) from None
    max_batch = resolve(config).detector.max_batch
    images = sample_calibration_inputs(config) if config.detector.precision == "int8" else None
    engine = TensorRTEngine(config.detector.model, config.detector, max_batch, calibration_images=images)
    state = "built" if engine.built else "already cached"
    engine.close()
    return f"TensorRT engine {state}: {engine.paths.engine} ({engine.key.describe()})"
