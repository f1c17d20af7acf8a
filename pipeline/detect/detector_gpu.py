"""The detector's GPU path: NV12 device frames -> host Detections, with nothing copied to the host before NMS.

    step = GpuDetectStep(spec, engine, head, config, input_size, class_filter)
    detections, scale, pad = step(batch.frames)      # frames: pixel_format "nv12", CuPy images

Per batch, all on the engine's CUDA stream: the fused NV12 letterbox kernel writes the engine's own
input buffer, the engine runs, the head decoder and the confidence filter run on CuPy, GPU NMS keeps
the same boxes the numpy reference would, boxes map back to source pixels, and only then are the
kept detections (a few hundred rows) copied to the host.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, nms, nms_gpu
from pipeline.detect.preprocess import PreprocessSpec
from pipeline.detect.preprocess_gpu import GpuPreprocessor
from pipeline.types import Detections, Frame


class GpuDetectStep:
    """Runs one chunk of at most `engine.max_batch` NV12 frames through a GPU engine.

    engine: a GPU engine with `stream` (CuPy), `input_dtype`, `input_buffer(rows)` and `infer`
    (TorchEngine, TensorRTEngine). head / input_size / class_filter as the Detector resolved them.
    antialias: see GpuPreprocessor.
    """

    def __init__(self, spec: PreprocessSpec, engine: Any, head: str, config: DetectorConfig,
                 input_size: tuple[int, int], class_filter=None, input_names: Sequence[str] = ("images",),
                 antialias: bool = True):
        self.spec = spec
        self.engine = engine
        self.head = head
        self.config = config
        self.input_size = tuple(input_size)
        self.class_filter = None if class_filter is None else np.asarray(class_filter)
        self.input_names = list(input_names)
        self.preprocess = GpuPreprocessor(spec, antialias=antialias)

    def __call__(self, frames: Sequence[Frame]) -> tuple[Detections, np.ndarray, np.ndarray]:
        """Host Detections (frame_idx = row), scale (B, 2) and pad (B, 2) float32, for every frame."""
        from pipeline.detect.detector import in_chunks  # noqa: PLC0415 - detector imports this module lazily

        return in_chunks(frames, self.engine.max_batch, self._chunk)

    def device_detections(self, frames: Sequence[Frame]) -> tuple[Detections, np.ndarray, np.ndarray]:
        """Like `__call__` for one chunk, but the Detections stay on the device (CuPy) and unsynchronised."""
        import cupy  # noqa: PLC0415 - GPU only

        n = len(frames)
        engine = self.engine
        buffer = engine.input_buffer(n)
        scale, pad = self.preprocess(frames, buffer, stream=engine.stream)
        with engine.stream:
            feed = {self.input_names[0]: buffer}
            sizes = cupy.asarray(np.asarray([(f.width, f.height) for f in frames], np.int64))
            if self.head == "detr" and len(self.input_names) > 1:
                feed[self.input_names[1]] = sizes
            outputs = engine.infer(feed)
            decoded = heads.decode(self.head, outputs, self.input_size)
            return self._select(decoded, sizes, scale, pad), scale, pad

    def _chunk(self, frames: Sequence[Frame]) -> tuple[Detections, np.ndarray, np.ndarray]:
        found, scale, pad = self.device_detections(frames)
        with self.engine.stream:
            host = found.to_host()
        return host, scale, pad

    def _select(self, decoded: heads.HeadOutput, sizes, scale: np.ndarray, pad: np.ndarray) -> Detections:
        """Confidence filter, NMS (or top-k) and the mapping to source pixels, on the device."""
        import cupy  # noqa: PLC0415 - GPU only

        cfg = self.config
        boxes, scores, class_ids, rows = nms.candidates(
            decoded.boxes, decoded.scores, decoded.class_ids, cfg.conf_threshold, self.class_filter
        )
        if decoded.needs_nms:
            keep = nms_gpu.batched_nms(boxes, scores, class_ids, rows, cfg.iou_threshold, cfg.max_detections)
        else:
            keep = cupy.asarray(nms.top_k(scores.get(), rows.get(), cfg.max_detections))
        boxes, scores, class_ids, rows = boxes[keep], scores[keep], class_ids[keep], rows[keep]
        wh = sizes[rows].astype(np.float32)
        if not decoded.in_source:
            scale4 = cupy.tile(cupy.asarray(scale)[rows], 2)
            pad4 = cupy.tile(cupy.asarray(pad)[rows], 2)
            boxes = (boxes - pad4) / scale4
        boxes = cupy.minimum(cupy.maximum(boxes, 0), cupy.tile(wh, 2)).astype(np.float32)
        return Detections(boxes, scores, class_ids, rows)

