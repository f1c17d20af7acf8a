"""Timestamp-aligned buffering: per-stream rings, priority lanes, batch assembly."""
from pipeline.align.buffer import AlignedBuffer

__all__ = ["AlignedBuffer"]
