"""A `stages:` plugin for tests: one that fails on every frame."""
from __future__ import annotations


class Exploding:
    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        raise RuntimeError(f"{self.stream_id}: broken plugin")
