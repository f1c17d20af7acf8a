"""Everything after the engine in one kernel: head decode, confidence filter, NMS, per-image cap, source pixels.

    select = FusedSelect(head, input_size, config, class_filter)
    found = select(outputs, table, n, stream)    # host Detections, or None: use the general path

One thread block per image: it scores every anchor (best class, objectness), keeps those above the
confidence threshold and in the class filter, sorts them by (score descending, anchor index) in
shared memory, walks them greedily keeping a box unless a kept box of its class overlaps it by more
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
from pipeline.types import Detections

CAPACITY = 4096  # candidates per image held in shared memory (8 bytes each)
THREADS = 512
MAX_ANCHORS = 1 << 20  # a sort key holds the anchor index in 20 bits and the class in 12
HEAD_CODES = {"ultralytics": 0, "yolov5": 1, "yolox": 2, "end2end": 3, "detr": 4, "rtdetr": 3}
"""The kernel's code per head; RT-DETR's rows are turned into end-to-end ones (input-pixel corners) first."""

_SOURCE = r"""
#define ULTRALYTICS 0
#define YOLOV5 1
#define YOLOX 2
#define END2END 3
#define DETR 4

// Floats -> unsigned ints in the same order (negative floats below positive ones).
__device__ __forceinline__ unsigned int ordered(float s) {
    const unsigned int u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float unordered(unsigned int o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// Largest of n values p[0], p[step], ...; the first one on ties (argmax); the first NaN if any (as numpy's
// max and argmax: a NaN class score makes the score NaN, which no threshold passes).
__device__ __forceinline__ void best_of(const float* p, int n, size_t step, float* best, int* index) {
    float m = p[0];
    int k = 0;
    for (int c = 1; c < n && m == m; ++c) {
        const float v = p[c * step];
        if (v > m || v != v) { m = v; k = c; }
    }
    *best = m;
    *index = k;
}

// Score and class of anchor i of image b. scores_in / labels: DETR's own outputs.
__device__ void score_of(int head, const float* raw, const int* labels, int b, int i, int anchors, int width,
                         float* score, int* cls) {
    if (head == ULTRALYTICS) {
        best_of(raw + ((size_t)b * width + 4) * anchors + i, width - 4, anchors, score, cls);
    } else if (head == YOLOV5 || head == YOLOX) {
        const float* p = raw + ((size_t)b * anchors + i) * width;
        float best;
        best_of(p + 5, width - 5, 1, &best, cls);
        *score = best * p[4];
    } else if (head == END2END) {
        const float* p = raw + ((size_t)b * anchors + i) * 6;
        *score = p[4];
        *cls = p[5] >= 0.f && p[5] < 2147483648.f ? (int)p[5] : -1;  // heads.class_ids_of: not a class -> -1
    } else {
        *score = raw[(size_t)b * anchors + i];
        *cls = labels[(size_t)b * anchors + i];
    }
}

__device__ __forceinline__ void corners(float cx, float cy, float w, float h, float* box) {
    const float hw = w / 2.f, hh = h / 2.f;
    box[0] = cx - hw; box[1] = cy - hh; box[2] = cx + hw; box[3] = cy + hh;
}

// xyxy box of anchor i of image b (model pixels; source pixels for DETR).
__device__ void box_of(int head, const float* raw, const float* boxes_in, const float* grid, const float* stride,
                       int b, int i, int anchors, int width, float* box) {
    if (head == ULTRALYTICS) {
        const float* p = raw + (size_t)b * width * anchors + i;
        corners(p[0], p[anchors], p[2 * (size_t)anchors], p[3 * (size_t)anchors], box);
    } else if (head == YOLOV5) {
        const float* p = raw + ((size_t)b * anchors + i) * width;
        corners(p[0], p[1], p[2], p[3], box);
    } else if (head == YOLOX) {
        const float* p = raw + ((size_t)b * anchors + i) * width;
        const float s = stride[i];
        corners((p[0] + grid[2 * i]) * s, (p[1] + grid[2 * i + 1]) * s, expf(p[2]) * s, expf(p[3]) * s, box);
    } else {
        const float* p = head == END2END ? raw + ((size_t)b * anchors + i) * 6 : boxes_in + ((size_t)b * anchors + i) * 4;
        for (int k = 0; k < 4; ++k) box[k] = p[k];
    }
}

// The reference's IoU test (pipeline/detect/nms.py), rounded operation by operation: kept box a, candidate c.
__device__ __forceinline__ bool overlaps(const float* a, const float* c, float c_area, float threshold) {
    const float w = fmaxf(__fsub_rn(fminf(a[2], c[2]), fmaxf(a[0], c[0])), 0.f);
    const float h = fmaxf(__fsub_rn(fminf(a[3], c[3]), fmaxf(a[1], c[1])), 0.f);
    const float inter = __fmul_rn(w, h);
    const float a_area = __fmul_rn(fmaxf(__fsub_rn(a[2], a[0]), 0.f), fmaxf(__fsub_rn(a[3], a[1]), 0.f));
    const float uni = __fsub_rn(__fadd_rn(a_area, c_area), inter);
    return (uni > 0.f ? __fdiv_rn(inter, uni) : 0.f) > threshold;
}

// One block per image row. out: (rows, max_det, 6) x1 y1 x2 y2 score class; counts: (rows,) kept per
// image, -1 when the image has more than `capacity` candidates or a class outside [0, 4096).
// table: (rows, 6) source w, h, scale x, y, pad x, y. threshold < 0: no suppression (top-k only).
// Candidates a broken model gives (a box not finite, a score above 1, a class outside [0, classes)) are
// dropped before the sort, as `nms.unusable` drops them; summary: (rows, 9) per image the count of each kind
// and one example of each (the lowest anchor's box, score and class), as `nms.unusable_summary` lays it out.
extern "C" __global__ void detect_select(
    int head, const float* __restrict__ raw, const float* __restrict__ boxes_in, const int* __restrict__ labels,
    int anchors, int width, const float* __restrict__ grid, const float* __restrict__ stride,
    const float* __restrict__ table, int images, float conf, const int* __restrict__ allowed, int n_allowed,
    int classes, float threshold, int max_det, int capacity, float* __restrict__ out, int* __restrict__ counts,
    float* __restrict__ summary)
{
    extern __shared__ unsigned long long keys[];
    __shared__ int found, dropped, bad, unusable[3], first[3];
    const int b = blockIdx.x;
    if (b >= images) {
        if (threadIdx.x == 0) counts[b] = 0;
        return;
    }
    if (threadIdx.x == 0) {
        found = 0; dropped = 0; bad = 0;
        for (int k = 0; k < 3; ++k) { unusable[k] = 0; first[k] = anchors; }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < anchors; i += blockDim.x) {
        float score;
        int cls;
        score_of(head, raw, labels, b, i, anchors, width, &score, &cls);
        if (!(score >= conf)) continue;
        bool wanted = n_allowed == 0;
        for (int k = 0; k < n_allowed && !wanted; ++k) wanted = allowed[k] == cls;
        if (!wanted) continue;
        float box[4];
        box_of(head, raw, boxes_in, grid, stride, b, i, anchors, width, box);
        const bool broken[3] = {!(isfinite(box[0]) && isfinite(box[1]) && isfinite(box[2]) && isfinite(box[3])),
                                !(score <= 1.f), cls < 0 || cls >= classes};
        if (broken[0] || broken[1] || broken[2]) {
            atomicAdd(&dropped, 1);
            for (int k = 0; k < 3; ++k)
                if (broken[k]) { atomicAdd(&unusable[k], 1); atomicMin(&first[k], i); }
            continue;
        }
        if (cls >= 4096) { bad = 1; continue; }
        const int slot = atomicAdd(&found, 1);
        if (slot < capacity)  // score descending, then anchor index: ascending keys
            keys[slot] = ((unsigned long long)(~ordered(score + 0.f)) << 32) | ((unsigned int)i << 12) | (unsigned int)cls;
    }
    __syncthreads();
    const int total = found;
    if (total + dropped > capacity || bad) {  // capacity counts every candidate, as the host's max_candidates
        if (threadIdx.x == 0) counts[b] = -1;
        return;
    }
    if (threadIdx.x == 0) {  // the summary: counts, then the first anchor's box, score and class of each kind
        float* s = summary + 9 * (size_t)b;
        float box[4] = {0.f, 0.f, 0.f, 0.f}, score = 0.f;
        int cls = 0;
        if (unusable[0]) box_of(head, raw, boxes_in, grid, stride, b, first[0], anchors, width, box);
        if (unusable[1]) score_of(head, raw, labels, b, first[1], anchors, width, &score, &cls);
        s[7] = score;
        if (unusable[2]) score_of(head, raw, labels, b, first[2], anchors, width, &score, &cls);
        for (int k = 0; k < 3; ++k) s[k] = (float)unusable[k];
        for (int k = 0; k < 4; ++k) s[3 + k] = box[k];
        s[8] = (float)(unusable[2] ? cls : 0);
    }
    int size = 1;
    while (size < total) size <<= 1;
    for (int k = total + threadIdx.x; k < size; k += blockDim.x) keys[k] = ~0ULL;
    __syncthreads();
    for (int span = 2; span <= size; span <<= 1) {  // bitonic sort, ascending
        for (int j = span >> 1; j > 0; j >>= 1) {
            for (int t = threadIdx.x; t < size; t += blockDim.x) {
                const int partner = t ^ j;
                if (partner > t) {
                    const unsigned long long x = keys[t], y = keys[partner];
                    if ((x > y) == ((t & span) == 0)) { keys[t] = y; keys[partner] = x; }
                }
            }
            __syncthreads();
        }
    }
    // Greedy NMS in rank order. Kept box k lives in out row k and only thread k % blockDim touches
    // it, so a thread reads only what it wrote itself; __syncthreads_or shares the verdict.
    float* kept_rows = out + (size_t)b * max_det * 6;
    int kept = 0;
    for (int r = 0; r < total && kept < max_det; ++r) {
        const unsigned long long key = keys[r];
        const int i = (int)((key & 0xffffffffULL) >> 12), cls = (int)(key & 0xfffULL);
        float box[4];
        box_of(head, raw, boxes_in, grid, stride, b, i, anchors, width, box);
        bool hit = false;
        if (threshold >= 0.f) {
            const float area = __fmul_rn(fmaxf(__fsub_rn(box[2], box[0]), 0.f), fmaxf(__fsub_rn(box[3], box[1]), 0.f));
            for (int k = threadIdx.x; k < kept && !hit; k += blockDim.x) {
                const float* a = kept_rows + 6 * k;
                hit = (int)a[5] == cls && overlaps(a, box, area, threshold);
            }
            hit = __syncthreads_or(hit);
        }
        if (!hit) {
            if (kept % blockDim.x == threadIdx.x) {
                float* a = kept_rows + 6 * kept;
                for (int k = 0; k < 4; ++k) a[k] = box[k];
                a[4] = unordered(~(unsigned int)(key >> 32));
                a[5] = (float)cls;
            }
            ++kept;
        }
    }
    const float* t = table + 6 * b;  // source w, h, scale x, y, pad x, y
    for (int k = threadIdx.x; k < kept; k += blockDim.x) {
        float* a = kept_rows + 6 * k;
        for (int c = 0; c < 4; ++c) {
            float v = a[c];
            if (head != DETR) v = (v - t[4 + (c & 1)]) / t[2 + (c & 1)];
            a[c] = fminf(fmaxf(v, 0.f), t[c & 1]);
        }
    }
    if (threadIdx.x == 0) counts[b] = kept;
}
"""

_KERNEL = None


def _kernel():
    global _KERNEL  # noqa: PLW0603 - one compiled kernel per process
    import cupy  # noqa: PLC0415 - GPU only

    if _KERNEL is None:
        _KERNEL = cupy.RawKernel(_SOURCE, "detect_select")
    return _KERNEL


class FusedSelect:
    """The post-engine half of the GPU path for one head; reusable result buffers (device and pinned host).

    head: one of heads.HEADS; input_size: model input (w, h); class_filter: class ids to keep or None;
    num_classes: class ids at or above it have no name and are dropped, as on the host (None: none are);
    report(what, count, example): told of the candidates dropped as a broken model's (`nms.unusable`), per
    batch that had any, as `detector.postprocess` tells it.
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
            _kernel()((rows,), (THREADS,), args, shared_mem=CAPACITY * 8)
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

    def _operands(self, outputs: dict[str, Any]):
        """(raw, boxes_in, labels, anchors, width) as float32/int32 C-contiguous device arrays for the kernel."""
        import cupy  # noqa: PLC0415 - GPU only

        if self.head == "detr":
            scores = cupy.ascontiguousarray(outputs["scores"], np.float32)
            boxes = cupy.ascontiguousarray(outputs["boxes"], np.float32)
            labels = cupy.ascontiguousarray(heads.class_ids_of(outputs["labels"]))  # int64 beyond int32: -1
            return scores, boxes, labels, int(scores.shape[1]), 1
        raw = cupy.ascontiguousarray(next(iter(outputs.values())), np.float32)
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
