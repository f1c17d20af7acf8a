"""The detector's GPU path: NV12 device frames -> host Detections, with nothing copied to the host before NMS.

    step = GpuDetectStep(spec, engine, head, config, input_size, class_filter)
    detections, scale, pad = step(batch.frames)      # frames: pixel_format "nv12", CuPy images
    collect = step.submit(next_batch.frames)         # queued on the GPU; returns at once
    detections, scale, pad = collect()               # waits for that batch only

Per batch, all on the engine's CUDA stream: the fused NV12 letterbox kernel writes the engine's own
input buffer, the engine runs, and one more kernel (`select_gpu.FusedSelect`) decodes the head,
filters, runs NMS and maps the kept boxes to source pixels; its fixed-size result is the only copy
to the host and the only sync. `submit` returns before that sync, so the next batch can be queued
behind (the inference loop keeps the GPU busy while it hands results on). Each CUDA call costs the
inference thread a wait for the interpreter lock when many decode threads share it, so the count of
calls per batch is kept to a handful.

When an image has more candidates than the fused kernel holds (a very low confidence threshold),
the general path runs instead: head decode and filter on CuPy, then `nms_gpu`, which keeps the same
boxes as the numpy reference (three host syncs). A queued batch is run again for it, since a later
batch may have overwritten the engine's outputs by then.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, nms, nms_gpu
from pipeline.detect.chunks import in_chunks
from pipeline.detect.preprocess import PreprocessSpec
from pipeline.detect.preprocess_gpu import GpuPreprocessor, Staging
from pipeline.detect.select_gpu import FusedSelect
from pipeline.types import Detections, Frame


class GpuDetectStep:
    """Runs one chunk of at most `engine.max_batch` NV12 frames through a GPU engine.

    engine: a GPU engine with `stream` (CuPy), `input_dtype`, `rows_for(n)` (the batch size it runs n
    rows at), `input_buffer(rows)` and `infer` (TorchEngine, TensorRTEngine). head / input_size / class_filter as the Detector resolved them.
    antialias: see GpuPreprocessor. num_classes, report: candidates a broken model gives are dropped and
    reported as `detector.postprocess` does on the host (`nms.unusable`).
    """

    def __init__(self, spec: PreprocessSpec, engine: Any, head: str, config: DetectorConfig,
                 input_size: tuple[int, int], class_filter=None, input_names: Sequence[str] = ("images",),
                 antialias: bool = True, num_classes: int | None = None, report=None):
        self.spec = spec
        self.engine = engine
        self.head = head
        self.config = config
        self.input_size = tuple(input_size)
        self.class_filter = None if class_filter is None else np.asarray(class_filter)
        self.input_names = list(input_names)
        self.preprocess = GpuPreprocessor(spec, antialias=antialias)
        self._staging = Staging()
        self.num_classes, self.report = num_classes, report
        self._select = FusedSelect(head, self.input_size, config, self.class_filter, num_classes, report)
        self._lock = threading.Lock()  # the step's host state (staging, the last outputs) is one thread's at a time
        self._outputs: dict[str, Any] = {}
        self._generation = 0  # counts the engine runs: whether `_outputs` are still a queued batch's
        self._fused = True  # False once the fused kernel could not serve the model's layout

    def __call__(self, frames: Sequence[Frame]) -> tuple[Detections, np.ndarray, np.ndarray]:
        """Host Detections (frame_idx = row), scale (B, 2) and pad (B, 2) float32, for every frame."""
        return in_chunks(frames, self.engine.max_batch, self._chunk)

    def submit(self, frames: Sequence[Frame]) -> Callable[[], tuple[Detections, np.ndarray, np.ndarray]]:
        """Queue a batch on the engine's stream and return at once; calling the result (once) waits for the batch
        and gives what `__call__` gives. Batches queued one after another run in order on the one stream, so
        the GPU starts the next as soon as this one is done, while the caller hands this one's results on.

        The frames must stay alive until the result is taken. What cannot be queued (a batch larger than the
        engine takes; a model whose layout the fused kernel cannot serve, found on its first batch) is
        detected when the result is asked for, so it never holds up an earlier batch's results.
        """
        if len(frames) > self.engine.max_batch or not self._fused:
            return lambda: self(frames)
        with self._lock:
            queued, table_d, scale, pad = self._queue(frames)
            if queued is None:  # the kernel cannot serve this layout: this batch now, the next ones when asked
                self._fused = False
                found = self._general(table_d, len(frames))
                return lambda: (found, scale, pad)
            generation = self._generation

        def collect() -> tuple[Detections, np.ndarray, np.ndarray]:
            found = self._select.collect(queued)
            if found is None:  # more candidates than the kernel holds: the general path on this batch's outputs
                with self._lock:
                    table = table_d
                    if generation != self._generation:  # a later batch overwrote them: run the engine again
                        _, table, _, _ = self._queue(frames, fused=False)
                    found = self._general(table, len(frames))
            return found, scale, pad

        return collect

    def _chunk(self, frames: Sequence[Frame], fused: bool = True) -> tuple[Detections, np.ndarray, np.ndarray]:
        """One chunk, waited for: the fused kernel, or the general path on the same outputs where it cannot serve."""
        with self._lock:
            queued, table_d, scale, pad = self._queue(frames, fused and self._fused)
            found = None if queued is None else self._select.collect(queued)
            return (self._general(table_d, len(frames)) if found is None else found), scale, pad

    def _queue(self, frames: Sequence[Frame], fused: bool = True) -> tuple[Any, Any, np.ndarray, np.ndarray]:
        """Letterbox, engine and (when `fused`) the fused kernel's launch, queued on the engine's stream, under
        `_lock`: (the launch or None, the device row table, scale, pad). The outputs are left in `_outputs`.
        Should a call fail after queueing, the stream is waited for: the frames may go once this returns."""
        n = len(frames)
        engine = self.engine
        # The engine runs a whole bucket (rows past n are padding, ignored below), so every kernel
        # after it sees one of a few shapes, compiled at warm-up.
        rows = engine.rows_for(n)
        buffer = engine.input_buffer(rows)
        kernel_tables, scale, pad = self.preprocess.describe(frames)
        table = row_table(rows, [(f.width, f.height) for f in frames], scale, pad)
        self._generation += 1
        with engine.stream:
            try:
                *kernel_tables, table_d = self._staging.upload((*kernel_tables, table), engine.stream)  # one copy
                self.preprocess.launch(kernel_tables, buffer, n)
                feed = {self.input_names[0]: buffer}
                if self.head == "detr" and len(self.input_names) > 1:
                    feed[self.input_names[1]] = table_d[:, 0:2].astype(np.int64)
                self._outputs = engine.infer(feed)
                queued = self._select.launch(self._outputs, table_d, n, engine.stream) if fused else None
            except BaseException:
                engine.stream.synchronize()
                raise
        return queued, table_d, scale, pad

    def detect_inputs(self, inputs: dict[str, Any], sizes, scale: np.ndarray, pad: np.ndarray) -> Detections:
        """Host Detections of frames preprocessed on the host: the engine's `inputs` (by name) run, then the same
        post-engine step as NV12 frames. sizes (n, 2) source (w, h); scale, pad (n, 2) float32 as preprocessing
        reported them."""
        with self._lock:
            self._generation += 1
            self._outputs = self.engine.infer(inputs)
            rows = int(next(iter(self._outputs.values())).shape[0])
            with self.engine.stream:
                (table_d,) = self._staging.upload((row_table(rows, sizes, scale, pad),), self.engine.stream)
            found = self._select(self._outputs, table_d, len(sizes), self.engine.stream)
            return self._general(table_d, len(sizes)) if found is None else found

    def _general(self, table_d, n: int) -> Detections:
        """The general path on the last outputs (`_queue`'s or `detect_inputs`'), under `_lock`."""
        with self.engine.stream:
            return select_general(heads.decode(self.head, self._outputs, self.input_size), table_d, n, self.config,
                                  self.class_filter, self.num_classes, self.report)

    def warm_up(self) -> None:
        """Run every kernel of the path, the general one too, at every batch size the engine runs, on
        made-up data, so CuPy compiles them (NVRTC, seconds on a fresh machine) before frames arrive."""
        import cupy  # noqa: PLC0415 - GPU only

        image = cupy.full((96, 64), 128, np.uint8)
        label = 0 if self.class_filter is None or not len(self.class_filter) else int(self.class_filter[0])
        for rows in sorted({self.engine.rows_for(n) for n in range(1, self.engine.max_batch + 1)}):
            frames = [Frame("warm-up", i, 0, 0, image, 64, 64, "nv12") for i in range(rows)]
            self._chunk(frames)
            with self.engine.stream:
                boxes = cupy.tile(cupy.asarray([[4, 4, 40, 40], [6, 6, 42, 42], [20, 20, 60, 60]], np.float32), (rows, 1, 1))
                scores = cupy.tile(cupy.asarray([0.9, 0.8, 0.7], np.float32), (rows, 1))
                classes = cupy.full((rows, 3), label, np.int32)
                table = cupy.ones((rows, 6), np.float32)
                for needs_nms in (True, False):
                    decoded = heads.HeadOutput(boxes, scores, classes, self.head == "detr", needs_nms)
                    select_general(decoded, table, rows, self.config, self.class_filter)
        self.engine.stream.synchronize()


def row_table(rows: int, sizes, scale: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """(rows, 6) float32 per row: source w, h, scale x, y, pad x, y; rows past len(sizes) pad the
    batch to the engine's size (ones, never read as frames)."""
    table = np.ones((rows, 6), np.float32)
    n = len(sizes)
    table[:n, 0:2], table[:n, 2:4], table[:n, 4:6] = sizes, scale, pad
    return table


def select_general(decoded: heads.HeadOutput, table, n: int, config: DetectorConfig, class_filter=None,
                   num_classes: int | None = None, report=None) -> Detections:
    """Confidence filter, NMS (or top-k), the mapping to source pixels, and one copy to the host.

    table: (rows, 6) device float32 per row (source w, h, scale x, y, pad x, y); only rows < n are
    frames. Two host syncs besides the final copy: the candidate count and the NMS group layout.
    Rows the NMS dropped travel in the same copy, flagged, and are dropped on the host. Candidates a broken
    model gives (`nms.unusable`, with `num_classes` as in `detector.postprocess`) are ranked last, so they
    suppress no other box and take no place of one, and dropped with those; their summary travels in the
    same copy and goes to `report(what, count, example)` as the host path tells it.
    """
    import cupy  # noqa: PLC0415 - GPU only

    boxes, scores, class_ids, rows = nms.candidates(
        decoded.boxes, decoded.scores, decoded.class_ids, config.conf_threshold, class_filter, config.max_candidates,
        images=n,
    )
    if rows.size == 0:
        return Detections.empty()
    checks = nms.unusable(boxes, scores, class_ids, num_classes)
    bad = checks[0][1] | checks[1][1] | checks[2][1]
    summary = nms.unusable_summary(checks)
    threshold = config.iou_threshold if decoded.needs_nms else None
    order, kept = nms_gpu.ranked_keep(boxes, cupy.where(bad, -np.inf, scores), class_ids, rows, threshold,
                                      config.max_detections)
    kept &= ~bad[order]
    boxes, scores, class_ids, rows = boxes[order], scores[order], class_ids[order], rows[order]
    per_row = table[rows]
    if not decoded.in_source:
        boxes = (boxes - cupy.tile(per_row[:, 4:6], 2)) / cupy.tile(per_row[:, 2:4], 2)
    boxes = cupy.minimum(cupy.maximum(boxes, 0), cupy.tile(per_row[:, 0:2], 2))
    columns = (boxes, scores[:, None], class_ids[:, None], rows[:, None], kept[:, None])
    packed = cupy.concatenate([c.astype(np.float32, copy=False) for c in columns], axis=1)
    packed = cupy.concatenate([packed.ravel(), summary.ravel()]).get()  # the one copy
    packed, summary = packed[: -nms.SUMMARY_WIDTH].reshape(-1, 8), packed[-nms.SUMMARY_WIDTH :][None]
    if report is not None:
        nms.report_unusable(summary, report)
    packed = packed[packed[:, 7] > 0]
    return Detections(np.ascontiguousarray(packed[:, :4]), packed[:, 4], packed[:, 5].astype(np.int32),
                      packed[:, 6].astype(np.int32))
