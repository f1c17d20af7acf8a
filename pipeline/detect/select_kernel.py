"""The fused post-engine kernel's CUDA source (`select_gpu.FusedSelect` launches it; see there for the contract).

Each image is scored by several thread blocks at once (a block per `THREADS` anchors): they append the
candidates' sort keys to the image's slice of a device scratch array and count them in its tally; the block
that finishes last (an atomic count of finished blocks, after a memory fence) sorts them in shared memory,
runs the NMS, writes the result and zeroes the tally for the next launch. One launch, as before; with one
block per image the scan of 8,400 anchors x 80 classes kept 32 of the GPU's SMs busy and the others idle.
"""
from __future__ import annotations

CAPACITY = 4096  # candidates per image held in shared memory (8 bytes each)
THREADS = 512
TALLY = 10  # ints per image: found, dropped, bad, unusable[3], anchors - first[3], blocks done
MAX_ANCHORS = 1 << 20  # a sort key holds the anchor index in 20 bits and the class in 12
HEAD_CODES = {"ultralytics": 0, "yolov5": 1, "yolox": 2, "end2end": 3, "detr": 4, "rtdetr": 3}
"""The kernel's code per head; RT-DETR's rows are turned into end-to-end ones (input-pixel corners) first."""

_SOURCE = f"#define TALLY {TALLY}\n" + r"""
#define ULTRALYTICS 0
#define YOLOV5 1
#define YOLOX 2
#define END2END 3
#define DETR 4

#ifdef RAW_HALF  // the engine's FP16 outputs, read as they are: each value widens to float exactly
#include <cuda_fp16.h>
typedef __half raw_t;
__device__ __forceinline__ float value(__half v) { return __half2float(v); }
#else
typedef float raw_t;
__device__ __forceinline__ float value(float v) { return v; }
#endif

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
__device__ __forceinline__ void best_of(const raw_t* p, int n, size_t step, float* best, int* index) {
    float m = value(p[0]);
    int k = 0;
    for (int c = 1; c < n && m == m; ++c) {
        const float v = value(p[c * step]);
        if (v > m || v != v) { m = v; k = c; }
    }
    *best = m;
    *index = k;
}

// Score and class of anchor i of image b. scores_in / labels: DETR's own outputs.
__device__ void score_of(int head, const raw_t* raw, const int* labels, int b, int i, int anchors, int width,
                         float* score, int* cls) {
    if (head == ULTRALYTICS) {
        best_of(raw + ((size_t)b * width + 4) * anchors + i, width - 4, anchors, score, cls);
    } else if (head == YOLOV5 || head == YOLOX) {
        const raw_t* p = raw + ((size_t)b * anchors + i) * width;
        float best;
        best_of(p + 5, width - 5, 1, &best, cls);
        *score = best * value(p[4]);
    } else if (head == END2END) {
        const raw_t* p = raw + ((size_t)b * anchors + i) * 6;
        const float c = value(p[5]);
        *score = value(p[4]);
        *cls = c >= 0.f && c < 2147483648.f ? (int)c : -1;  // heads.class_ids_of: not a class -> -1
    } else {
        *score = value(raw[(size_t)b * anchors + i]);
        *cls = labels[(size_t)b * anchors + i];
    }
}

__device__ __forceinline__ void corners(float cx, float cy, float w, float h, float* box) {
    const float hw = w / 2.f, hh = h / 2.f;
    box[0] = cx - hw; box[1] = cy - hh; box[2] = cx + hw; box[3] = cy + hh;
}

// xyxy box of anchor i of image b (model pixels; source pixels for DETR).
__device__ void box_of(int head, const raw_t* raw, const float* boxes_in, const float* grid, const float* stride,
                       int b, int i, int anchors, int width, float* box) {
    if (head == ULTRALYTICS) {
        const raw_t* p = raw + (size_t)b * width * anchors + i;
        corners(value(p[0]), value(p[anchors]), value(p[2 * (size_t)anchors]), value(p[3 * (size_t)anchors]), box);
    } else if (head == YOLOV5) {
        const raw_t* p = raw + ((size_t)b * anchors + i) * width;
        corners(value(p[0]), value(p[1]), value(p[2]), value(p[3]), box);
    } else if (head == YOLOX) {
        const raw_t* p = raw + ((size_t)b * anchors + i) * width;
        const float s = stride[i];
        corners((value(p[0]) + grid[2 * i]) * s, (value(p[1]) + grid[2 * i + 1]) * s, expf(value(p[2])) * s,
                expf(value(p[3])) * s, box);
    } else if (head == END2END) {
        const raw_t* p = raw + ((size_t)b * anchors + i) * 6;
        for (int k = 0; k < 4; ++k) box[k] = value(p[k]);
    } else {
        const float* p = boxes_in + ((size_t)b * anchors + i) * 4;
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

// Grid (blocks per image, rows). out: (rows, max_det, 6) x1 y1 x2 y2 score class; counts: (rows,) kept per
// image, -1 when the image has more than `capacity` candidates or a class outside [0, 4096).
// table: (rows, 6) source w, h, scale x, y, pad x, y. threshold < 0: no suppression (top-k only).
// Candidates a broken model gives (a box not finite, a score above 1, a class outside [0, classes)) are
// dropped before the sort, as `nms.unusable` drops them; summary: (rows, 9) per image the count of each kind
// and one example of each (the lowest anchor's box, score and class), as `nms.unusable_summary` lays it out.
// found_keys: (rows, capacity) scratch; tally: (rows, TALLY) zeros, and zeros again when the kernel is done.
extern "C" __global__ void detect_select(
    int head, const raw_t* __restrict__ raw, const float* __restrict__ boxes_in, const int* __restrict__ labels,
    int anchors, int width, const float* __restrict__ grid, const float* __restrict__ stride,
    const float* __restrict__ table, int images, float conf, const int* __restrict__ allowed, int n_allowed,
    int classes, float threshold, int max_det, int capacity, float* __restrict__ out, int* __restrict__ counts,
    float* __restrict__ summary, unsigned long long* __restrict__ found_keys, int* __restrict__ tally)
{
    extern __shared__ unsigned long long keys[];
    __shared__ int found, dropped, bad, unusable[3], first[3];
    __shared__ bool last;
    const int b = blockIdx.y;
    if (b >= images) {
        if (blockIdx.x == 0 && threadIdx.x == 0) counts[b] = 0;
        return;
    }
    int* own = tally + TALLY * (size_t)b;  // found, dropped, bad, unusable[3], anchors - first[3], blocks done
    unsigned long long* image_keys = found_keys + (size_t)b * capacity;
    const int per_block = (anchors + gridDim.x - 1) / gridDim.x;
    const int stop = min(anchors, (int)(blockIdx.x + 1) * per_block);
    for (int i = blockIdx.x * per_block + threadIdx.x; i < stop; i += blockDim.x) {
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
            atomicAdd(&own[1], 1);
            for (int k = 0; k < 3; ++k)
                if (broken[k]) { atomicAdd(&own[3 + k], 1); atomicMax(&own[6 + k], anchors - i); }
            continue;
        }
        if (cls >= 4096) { atomicExch(&own[2], 1); continue; }
        const int slot = atomicAdd(&own[0], 1);
        if (slot < capacity)  // score descending, then anchor index: ascending keys
            image_keys[slot] = ((unsigned long long)(~ordered(score + 0.f)) << 32) | ((unsigned int)i << 12) | (unsigned int)cls;
    }
    __threadfence();  // this block's keys and counts are visible before it counts itself done
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(&own[9], 1) == (int)gridDim.x - 1;
        if (last) __threadfence();  // acquire: the other blocks' writes, published before their count, come first
    }
    __syncthreads();
    if (!last) return;
    if (threadIdx.x == 0) {  // the image's last block: read the tally past the cache, then zero it
        found = __ldcg(&own[0]); dropped = __ldcg(&own[1]); bad = __ldcg(&own[2]);
        for (int k = 0; k < 3; ++k) {
            unusable[k] = __ldcg(&own[3 + k]);
            const int f = __ldcg(&own[6 + k]);
            first[k] = f ? anchors - f : anchors;
        }
        for (int k = 0; k < TALLY; ++k) own[k] = 0;
    }
    __syncthreads();
    const int total = found;
    if (total + dropped > capacity || bad) {  // capacity counts every candidate, as the host's max_candidates
        if (threadIdx.x == 0) counts[b] = -1;
        return;
    }
    for (int k = threadIdx.x; k < total; k += blockDim.x) keys[k] = __ldcg(&image_keys[k]);
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

_KERNELS: dict[bool, object] = {}


def kernel(half: bool):
    """The compiled kernel for FP16 (`half`) or float32 engine outputs (once per process, cached by CuPy on disk)."""
    import cupy  # noqa: PLC0415 - GPU only

    if half not in _KERNELS:
        _KERNELS[half] = cupy.RawKernel(_SOURCE, "detect_select", options=("-DRAW_HALF",) if half else ())
    return _KERNELS[half]
