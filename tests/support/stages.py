"""Plugins for tests: `stages:` that fail on every frame, return a malformed event or numpy numbers in a payload, or
take credentials as options; a source of wrong frames."""
from __future__ import annotations

from dataclasses import replace


class Exploding:
    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        raise RuntimeError(f"{self.stream_id}: broken plugin")


class NoClassId:
    """Every 10th frame an event whose class_id is None (made by hand, not by `Moment.event`)."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        if result.frame.seq % 10 == 9:
            return [replace(result.moment.event("odd", "mark", -1, 0, {}), class_id=None)]
        return []


class NumpyScore:
    """Every 5th frame an event whose payload holds numpy numbers, as a stage that computes with numpy makes."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        import numpy as np  # noqa: PLC0415

        if result.frame.seq % 5 == 4:
            return [result.moment.event("score", "mark", -1, -1, {"seq": np.int64(result.frame.seq),
                                                                   "score": np.float32(0.5)})]
        return []


class Notifier:
    """A stage with credentials among its options, as one that calls a cloud API has; it sends nothing."""

    def __init__(self, stream_id: str, api_key: str, client: dict, every: int = 1):
        self.stream_id, self.every = stream_id, every

    def __call__(self, result):
        return []


class RgbaReader:
    """A source (`rgba://`) that gives 4-channel frames, as a plugin source might by mistake."""

    live = False

    def __init__(self, config, packet_tap=None):
        self.config = config

    def frames(self):
        import numpy as np  # noqa: PLC0415

        from pipeline.sources.reader import DecodedFrame  # noqa: PLC0415

        for i in range(10):
            yield DecodedFrame(np.zeros((48, 64, 4), np.uint8), i * 100_000_000, 64, 48)

    def counters(self):
        return {}

    def close(self):
        pass
