"""What an inference engine is. One ONNX file serves every engine."""
from __future__ import annotations

from typing import Any, Protocol


class Engine(Protocol):
    """Runs one model on batches of at most `max_batch` rows.

    `infer` takes the model inputs by name ((B, ...) arrays, B <= max_batch; host numpy for the CPU
    engines, device arrays for the GPU ones) and returns every output by name, with the same B.
    """

    name: str
    max_batch: int

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...
