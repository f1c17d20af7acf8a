"""Everything after the engine in one kernel: head decode, confidence filter, NMS, per-image cap, source pixels.

    select = FusedSelect(head, input_size, config, class_filter)
    found = select(outputs, table, n, stream)    # host Detections, or None: use the general path

Per image, thread blocks score every anchor (best class, objectness) and keep those above the
confidence threshold and in the class filter; the last of them sorts them by (score descending, anchor
index) in shared memory, walks them greedily keeping a box unless a kept box of its class overlaps it by more
than the IoU threshold, stops at `max_detections`, and maps the kept boxes to source pixels. The
result (fixed size per image, with a count) is the batch's only copy to the host.

Why: every CUDA call of the inference thread releases the interpreter lock and waits for it behind
the decode threads, so ~80 CuPy launches and three host syncs per batch cost more than the GPU
work. This is one launch, one copy and one sync.

Same result as the general path (`heads.decode` + `nms.candidates` + `nms_gpu.ranked_keep`, itself
equal to the numpy reference): same float32 arithmetic, IoU without fused multiply-add, ties by
anchor index. An image with more than `CAPACITY` candidates (a very low threshold) returns None, and
the caller runs the general path instead (`detector_gpu`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, nms
from pipeline.detect.select_kernel import CAPACITY, HEAD_CODES, MAX_ANCHORS, TALLY, THREADS, kernel
from pipeline.types import Detections


class FusedSelect:
    """The post-engine half of the GPU path for one head; reusable result buffers (device and pinned host).

    head: one of heads.HEADS; input_size: model input (w, h); class_filter: class ids to keep or None;
    num_classes: class ids at or above it have no name and are dropped, as on the host (None: none are);
    report(what, count, example): told of the candidates dropped as a broken model's (`nms.unusable`), per
    batch that had any, as `detector.postprocess` tells it. Every launch goes to one CUDA stream (they share
    the kernel's scratch).
    """

    def __init__(self, head: str, input_size: tuple[int, int], config: DetectorConfig, class_filter=None,
                 num_classes: int | None = None, report=None):
        import cupy  # noqa: PLC0415 - GPU only

        self.head = head
        self.input_size = tuple(input_size)
        self.config = config
        allowed = np.zeros(1, np.int32) if class_filter is None else np.asarray(class_filter, np.int32)
        self._allowed = cupy.asarray(allowed)
        self._n_allowed = 0 if class_filter is None else len(allowed)
        self._classes = np.iinfo(np.int32).max if num_classes is None else int(num_classes)
        self.report = report
        self._none = cupy.zeros(1, np.float32)  # stands for the operands a head does not have
        self._free: list[_Result] = []  # result buffers no batch in flight holds (taken under the step's lock)
        self._scratch = None  # (found keys (rows, CAPACITY), tally (rows, TALLY) of zeros) for the largest batch yet

    def __call__(self, outputs: dict[str, Any], table, n: int, stream) -> Detections | None:
        """Host Detections (frame_idx = row) of the first n rows of `outputs` (the engine's, by name); table:
        (rows, 6) device float32 per row (source w, h, scale x, y, pad x, y). None when an image has more
        candidates than the kernel holds, the layout does not fit its keys, or the kernel has no code for
        the head: run the general path instead."""
        queued = self.launch(outputs, table, n, stream)
        return None if queued is None else self.collect(queued)

    def launch(self, outputs: dict[str, Any], table, n: int, stream) -> "_Queued | None":
        """Queue the kernel and its copy to the host on `stream`, and return at once (`collect` waits for
        them), so the engine's next batch can be queued behind. The outputs may be overwritten as soon as
        the stream has run the kernel. None where the kernel cannot serve the layout (see `__call__`)."""
        if self.head not in HEAD_CODES:
            return None
        with stream:  # the operands and the grid too: made on another stream they might not be ready in time
            raw, boxes_in, labels, anchors, width = self._operands(outputs)
            if anchors >= MAX_ANCHORS:
                return None
            rows = int(raw.shape[0])
            max_det = self.config.max_detections
            size = _Result.floats(rows, max_det)
            result = self._result(size)
            out, counts, summary = result.split(rows, max_det)
            grid, stride = self._grid(anchors) if self.head == "yolox" else (self._none, self._none)
            threshold = self.config.iou_threshold if self.head in ("ultralytics", "yolov5", "yolox") else -1.0
            args = (
                np.int32(HEAD_CODES[self.head]), raw, boxes_in, labels, np.int32(anchors), np.int32(width), grid, stride,
                table, np.int32(n), np.float32(self.config.conf_threshold), self._allowed, np.int32(self._n_allowed),
                np.int32(self._classes), np.float32(threshold), np.int32(max_det),
                np.int32(min(CAPACITY, self.config.max_candidates)), out, counts, summary,
            )  # fmt: skip
            blocks = max(1, -(-anchors // THREADS))
            kernel(raw.dtype == np.float16)((blocks, rows), (THREADS,), (*args, *self._scratch_for(rows)),
                                            shared_mem=CAPACITY * 8)
            result.device.data.copy_to_host_async(result.host.ctypes.data, size * 4, stream)
            done = stream.record()
        return _Queued(result, done, rows, n)

    def collect(self, queued: "_Queued") -> Detections | None:
        """Wait for a `launch` and unpack its result; None when an image had more candidates than the kernel
        holds (run the general path on that batch again)."""
        result, queued.result = queued.result, None
        if result is None:
            raise RuntimeError("a launched batch was collected twice")
        queued.done.synchronize()
        try:
            return self._unpack(result.host, queued.rows, queued.n, self.config.max_detections)
        finally:
            self._free.append(result)

    def _result(self, size: int) -> "_Result":
        """A free result buffer pair of at least `size` floats (one per batch queued and not collected)."""
        while self._free:
            result = self._free.pop()
            if result.host.size >= size:
                return result
        return _Result(size)

    def _scratch_for(self, rows: int) -> tuple:
        """The kernel's scratch for a batch of `rows` rows (made on the launch's stream, in its order)."""
        import cupy  # noqa: PLC0415 - GPU only

        if self._scratch is None or self._scratch[1].shape[0] < rows:
            self._scratch = (cupy.empty((rows, CAPACITY), np.uint64), cupy.zeros((rows, TALLY), np.int32))
        return self._scratch

    def _operands(self, outputs: dict[str, Any]):
        """(raw, boxes_in, labels, anchors, width) as C-contiguous device arrays for the kernel: raw float16 as the
        engine gave it or float32, the others float32/int32."""
        import cupy  # noqa: PLC0415 - GPU only

        if self.head == "detr":
            scores = cupy.ascontiguousarray(outputs["scores"], np.float32)
            boxes = cupy.ascontiguousarray(outputs["boxes"], np.float32)
            labels = cupy.ascontiguousarray(heads.class_ids_of(outputs["labels"]))  # int64 beyond int32: -1
            return scores, boxes, labels, int(scores.shape[1]), 1
        raw = next(iter(outputs.values()))
        raw = cupy.ascontiguousarray(raw, np.float16 if raw.dtype == np.float16 and self.head != "rtdetr" else np.float32)
        if self.head == "rtdetr":  # normalised centre and size -> end-to-end's (x1, y1, x2, y2, score, class)
            decoded = heads.decode_rtdetr(raw, self.input_size)
            raw = cupy.concatenate([decoded.boxes, raw[..., 4:6]], axis=-1)
        anchors, width = (raw.shape[2], raw.shape[1]) if self.head == "ultralytics" else (raw.shape[1], raw.shape[2])
        return raw, self._none, self._none, int(anchors), int(width)

    def _grid(self, anchors: int):
        import cupy  # noqa: PLC0415 - GPU only

        return heads.yolox_grid_for(anchors, self.input_size, cupy)

    def _unpack(self, host, rows: int, n: int, max_det: int) -> Detections | None:
        kept_end = rows * (max_det * 6 + 1)
        counts = host[rows * max_det * 6 : kept_end].view(np.int32)[:n]
        if (counts < 0).any():
            return None
        if self.report is not None:
            nms.report_unusable(host[kept_end : kept_end + n * nms.SUMMARY_WIDTH].reshape(n, -1), self.report)
        found = host[: rows * max_det * 6].reshape(rows, max_det, 6)[:n][np.arange(max_det) < counts[:, None]]
        return Detections(np.ascontiguousarray(found[:, :4]), found[:, 4].copy(), found[:, 5].astype(np.int32),
                          np.repeat(np.arange(n, dtype=np.int32), counts))


class _Result:
    """One batch's result in one device allocation and its pinned host copy: kept boxes (rows, max_det, 6)
    float32, counts (rows,) int32 and the unusable candidates' summary (rows, nms.SUMMARY_WIDTH) float32."""

    def __init__(self, size: int):
        import cupy  # noqa: PLC0415 - GPU only
        import cupyx  # noqa: PLC0415 - GPU only

        self.device = cupy.empty(size, np.float32)
        self.host = cupyx.empty_pinned(size, np.float32)

    @staticmethod
    def floats(rows: int, max_det: int) -> int:  # of a batch of `rows` rows
        return rows * (max_det * 6 + 1 + nms.SUMMARY_WIDTH)

    def split(self, rows: int, max_det: int):
        """(out, counts, summary) device views for a batch of `rows` rows."""
        kept_end = rows * (max_det * 6 + 1)
        out = self.device[: rows * max_det * 6].reshape(rows, max_det, 6)
        counts = self.device[rows * max_det * 6 : kept_end].view(np.int32)
        return out, counts, self.device[kept_end : kept_end + rows * nms.SUMMARY_WIDTH].reshape(rows, nms.SUMMARY_WIDTH)


@dataclass
class _Queued:
    """A launched batch: its result buffers, the event after its copy to the host, its rows and frames."""

    result: _Result | None  # None once collected
    done: Any
    rows: int
    n: int
