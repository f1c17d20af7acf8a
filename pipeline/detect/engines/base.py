"""What an inference engine is. One ONNX file serves every engine."""
from __future__ import annotations

from typing import Any, Protocol

from pipeline.errors import EngineError


class Engine(Protocol):
    """Runs one model on batches of at most `max_batch` rows.

    `infer` takes the model inputs by name ((B, ...) arrays, B <= max_batch; host numpy for host
    engines, device arrays for device ones) and returns every output by name, with the same B.
    Whether the outputs stay on the device is declared in the engine's registration
    (`pipeline.plugins.EngineKind.device`) and carried by the plan, never probed.
    """

    name: str
    max_batch: int

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DeviceEngine(Engine, Protocol):
    """An engine whose inputs and outputs live on the GPU (TorchEngine, TensorRTEngine).

    stream: its CuPy CUDA stream (every step of a batch is queued on it). input_dtype: numpy dtype of
    its input. rows_for(n): the batch size n rows run at (a bucket). input_buffer(rows): a (rows, ...)
    view of its own input to preprocess into, which `infer` then reads without a copy.
    """

    stream: Any
    input_dtype: Any

    def rows_for(self, rows: int) -> int: ...

    def input_buffer(self, rows: int, name: str | None = None) -> Any: ...


def bucket_for(rows: int, buckets: list[int] | tuple[int, ...]) -> int:
    """The smallest bucket holding `rows` rows; EngineError when none does."""
    for size in buckets:
        if rows <= size:
            return size
    raise EngineError(f"batch of {rows} exceeds the engine's max_batch {buckets[-1]}")
