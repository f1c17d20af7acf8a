"""TensorRT engine bookkeeping that needs no TensorRT: cache keys, file names, profiles, calibration batches.

An engine file is only valid for the exact ONNX bytes, TensorRT version, GPU model and compute
capability, precision and optimisation profile it was built with, and an INT8 one for the preprocessing its
calibration frames went through, so all of them go into its key: change any one and the engine is rebuilt
instead of loaded.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

Shape = tuple[int, ...]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the ONNX model), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of one input: (B, C, H, W) shapes TensorRT tunes for."""

    name: str
    min: Shape
    opt: Shape
    max: Shape


def profile_for(name: str, chw: Shape, max_batch: int, opt_batch: int | None = None) -> Profile:
    """Batch 1 .. max_batch, tuned for `opt_batch` (default max_batch: full batches are the common case).

    A larger opt helps throughput at full batches; a smaller one helps latency for sparse streams.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    opt = max_batch if opt_batch is None else min(max(1, opt_batch), max_batch)
    return Profile(name, (1, *chw), (opt, *chw), (max_batch, *chw))


def input_shape(engine_shape: Shape, rows: int, chw: Shape | None = None) -> Shape:
    """The concrete shape to give an input TensorRT reports as `engine_shape` (-1 = dynamic) for a batch
    of `rows`: the batch dimension is `rows`, and for the image input (`chw` given) dynamic C, H, W come
    from the profile. ValueError for a dynamic dimension nothing fills."""
    shape = (rows, *engine_shape[1:])
    if chw is not None:
        shape = (rows, *(c if d < 0 else d for d, c in zip(shape[1:], chw)))
    if any(d < 0 for d in shape):
        raise ValueError(f"input shape {tuple(engine_shape)} has dynamic dimensions besides the batch")
    return shape


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine file depends on. `digest` names the file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[Profile, ...]
    calibration: str = ""  # INT8: `calibration_of` the config; "" for default preprocessing and other precisions

    def digest(self) -> str:
        """16 hex chars, stable across processes and Python versions. An empty `calibration` is left out, so the
        engines built before it was keyed keep their files."""
        fields = {k: v for k, v in asdict(self).items() if k != "calibration" or v}
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> str:
        """One line for logs: what the engine was built for."""
        shapes = ", ".join(f"{p.name} {p.min[0]}/{p.opt[0]}/{p.max[0]}" for p in self.profiles)
        return (f"TensorRT {self.tensorrt_version}, {self.gpu_name} (sm {self.compute_capability}), "
                f"{self.precision}, batch min/opt/max {shapes}")


def calibration_of(head: str, preprocess: dict) -> str:
    """What the frames an INT8 engine is calibrated on depend on besides the model and input size, whose value
    ranges the engine keeps: `detector.head` (its preprocessing conventions) and the `detector.preprocess` keys
    that are not their defaults. "" when both are defaults."""
    if head == "auto" and not preprocess:
        return ""
    return json.dumps({"head": head, "preprocess": preprocess}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class CachePaths:
    """Where one model's engine, the shared timing cache and the calibration cache live."""

    engine: Path
    timing: Path
    calibration: Path
    meta: Path


def cache_paths(cache_dir: Path, model_path: Path, key: EngineKey, calibration_images: int = 0) -> CachePaths:
    """File names under `cache_dir` (created by the caller).

    The timing cache depends only on TensorRT and the GPU, so every model shares it; the calibration
    cache depends on the model and the images it was fed, not on the TensorRT build.
    """
    stem = Path(model_path).stem
    gpu = "".join(c if c.isalnum() else "-" for c in key.gpu_name).strip("-").lower()
    frames = f"{key.onnx_sha256}|{calibration_images}" + (f"|{key.calibration}" if key.calibration else "")
    calib = hashlib.sha256(frames.encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser()
    return CachePaths(
        engine=root / f"{stem}-{key.digest()}.engine",
        timing=root / f"timing-trt{key.tensorrt_version}-{gpu}-sm{key.compute_capability}.cache",
        calibration=root / f"{stem}-{calib}.calib",
        meta=root / f"{stem}-{key.digest()}.json",
    )


def calibration_batches(images: Iterable[np.ndarray], batch_size: int, limit: int) -> Iterator[np.ndarray]:
    """Group preprocessed (C, H, W) float32 images into contiguous (batch_size, C, H, W) batches.

    At most `limit` images are used; a last partial batch is dropped (TensorRT calibrators take
    fixed-size batches), so `limit // batch_size` batches at most.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[np.ndarray] = []
    used = 0
    for image in images:
        if used >= limit:
            break
        pending.append(np.asarray(image, np.float32))
        used += 1
        if len(pending) == batch_size:
            yield np.ascontiguousarray(np.stack(pending))
            pending = []
