"""What an inference engine is. One ONNX file serves every engine."""
from __future__ import annotations

from typing import Any, Protocol

from pipeline.errors import EngineError


class Engine(Protocol):
    """Runs one model on batches of at most `max_batch` rows.

    `infer` takes the model inputs by name ((B, ...) arrays, B <= max_batch; host numpy for the CPU
    engines, device arrays for the GPU ones) and returns every output by name, with the same B.
    """

    name: str
    max_batch: int

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes the GPU engines run at: powers of two below `max_batch`, then `max_batch` itself.

    Few sizes, so each gets a CUDA graph, and the GPU post-processing (CuPy kernels, which CuPy
    compiles per array shape it meets) sees few shapes, all compiled at warm-up."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def bucket_for(rows: int, buckets: list[int]) -> int:
    """The smallest bucket holding `rows` rows; EngineError when none does."""
    for size in buckets:
        if rows <= size:
            return size
    raise EngineError(f"batch of {rows} exceeds the engine's max_batch {buckets[-1]}")
