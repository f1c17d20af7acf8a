"""Engine `fake`: finds the bright square of `fake://` frames, so the pipeline runs without a model."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.detect.heads import ModelSignature, TensorInfo
from pipeline.plugins import EngineKind

INPUT = 64
"""The fake model's input side in pixels."""

SLOTS = 4
"""Boxes per frame in its end-to-end output `[B, SLOTS, 6]` (x1, y1, x2, y2, score, class)."""

FAILS_WHILE = "STREAMWEAVE_FAKE_ENGINE_FAILS_WHILE"
"""The environment variable naming a file: while it exists, every batch fails."""


def model_info(model_path) -> tuple[ModelSignature, dict[str, str]]:
    """The signature the fake model would have (no file is read)."""
    signature = ModelSignature((TensorInfo("images", ("batch", 3, INPUT, INPUT)),),
                               (TensorInfo("output0", ("batch", SLOTS, 6)),))
    return signature, {}


class FakeEngine:
    """One box per frame around its bright pixels; each batch takes 1-4 ms depending on its content.
    `most_at_once`: the most batches that were inside `infer` at the same time."""

    name = "fake"

    def __init__(self, max_batch: int):
        self.max_batch = max_batch
        self.most_at_once = 0
        self._inside = 0
        self._lock = threading.Lock()
        self._fails_while = Path(os.environ[FAILS_WHILE]) if os.environ.get(FAILS_WHILE) else None

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
        try:
            return self._infer(inputs["images"])
        finally:
            with self._lock:
                self._inside -= 1

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self._fails_while is not None and self._fails_while.exists():
            raise RuntimeError(f"fake engine: failing while {self._fails_while} exists")
        out = np.zeros((len(images), SLOTS, 6), np.float32)
        bright = images.mean(axis=1) > 0.5  # (B, H, W); inputs are RGB scaled to 0..1
        for row, mask in enumerate(bright):
            ys, xs = np.nonzero(mask)
            if len(xs):
                out[row, 0] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 0)
        time.sleep(0.001 * (1 + int(images.sum()) % 4))  # uneven, so concurrent batches finish out of order
        return {"output0": out}

    def close(self) -> None:
        pass


def _create(model_path: Path, config, plan) -> FakeEngine:
    return FakeEngine(plan.max_batch)


FAKE_ENGINE = EngineKind("fake", _create, concurrent=True, model_info=model_info)
