"""`Snapshot`: what the pipeline is doing right now, for the live view, the summary, metrics and /status."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Snapshot:
    """What the pipeline is doing right now (for the live progress view and the final summary)."""

    elapsed_s: float  # from start until the last batch was detected (shutdown is in extra["shutdown_s"])
    streams: dict[str, dict]
    lanes: dict[str, dict]
    batches: int
    frames_detected: int
    detections: int
    events: int
    sink_depths: list[int]
    sink_failures: dict[str, int]
    engine: str
    infer_s: float
    extra: dict = field(default_factory=dict)
