"""Class-aware batched NMS on the GPU (CuPy), returning exactly what `pipeline.detect.nms.batched_nms` returns.

Method (the classic bitmask NMS, per (image, class) group so groups never meet):
1. sort candidates by (group, score descending, index) - the reference's greedy order within a group;
2. one thread per (box, 64-box block of its group) writes a 64-bit word: bit t set when the IoU
   with box t of that block (ranked lower) is above the threshold;
3. one thread block per group walks its boxes in order, keeping a box unless a kept box's bit
   removed it, and ORs the kept box's words into the removed set (shared memory);
4. rank the kept boxes by (image, score descending, index) and cap each image at `max_per_image`,
   with fixed-size results (`ranked_keep`) so the caller needs no host sync to use them.
IoU is computed in float32 with the reference's operation order and no fused multiply-add, so
borderline boxes fall on the same side of the threshold as in numpy.
"""
from __future__ import annotations

import numpy as np

_SOURCE = r"""
extern "C" __global__ void nms_mask(
    const float* __restrict__ boxes, const float* __restrict__ areas, const int* __restrict__ box_group,
    const long long* __restrict__ group_start, const int* __restrict__ group_size,
    const long long* __restrict__ word_offset, int n, int max_blocks, float threshold,
    unsigned long long* __restrict__ mask)
{
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (long long)n * max_blocks) return;
    const int i = (int)(tid / max_blocks), block = (int)(tid % max_blocks);
    const int g = box_group[i];
    const int size = group_size[g];
    const int blocks = (size + 63) / 64;
    if (block >= blocks) return;
    const long long start = group_start[g];
    const int local = i - (int)start;
    const float x1 = boxes[4 * i], y1 = boxes[4 * i + 1], x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
    const float area = areas[i];
    unsigned long long word = 0ULL;
    for (int t = 0; t < 64; ++t) {
        const int lj = block * 64 + t;
        if (lj <= local || lj >= size) continue;
        const long long j = start + lj;
        const float w = fmaxf(fminf(x2, boxes[4 * j + 2]) - fmaxf(x1, boxes[4 * j]), 0.f);
        const float h = fmaxf(fminf(y2, boxes[4 * j + 3]) - fmaxf(y1, boxes[4 * j + 1]), 0.f);
        const float inter = w * h;
        const float uni = (area + areas[j]) - inter;
        const float iou = uni > 0.f ? inter / uni : 0.f;
        if (iou > threshold) word |= 1ULL << t;
    }
    mask[word_offset[g] + (long long)local * blocks + block] = word;
}

extern "C" __global__ void nms_reduce(
    const unsigned long long* __restrict__ mask, const long long* __restrict__ group_start,
    const int* __restrict__ group_size, const long long* __restrict__ word_offset, unsigned char* __restrict__ keep)
{
    extern __shared__ unsigned long long removed[];
    const int g = blockIdx.x;
    const int size = group_size[g];
    const int blocks = (size + 63) / 64;
    const long long start = group_start[g];
    for (int k = threadIdx.x; k < blocks; k += blockDim.x) removed[k] = 0ULL;
    __syncthreads();
    for (int i = 0; i < size; ++i) {
        const bool alive = !((removed[i >> 6] >> (i & 63)) & 1ULL);
        __syncthreads();
        if (alive) {
            if (threadIdx.x == 0) keep[start + i] = 1;
            const unsigned long long* row = mask + word_offset[g] + (long long)i * blocks;
            for (int k = (i >> 6) + threadIdx.x; k < blocks; k += blockDim.x) removed[k] |= row[k];
        }
        __syncthreads();
    }
}
"""

_MODULE = None


def _kernels():
    global _MODULE  # noqa: PLW0603 - one compiled module per process
    import cupy  # noqa: PLC0415 - GPU only

    if _MODULE is None:
        _MODULE = cupy.RawModule(code=_SOURCE, options=("--fmad=false",))
    return _MODULE.get_function("nms_mask"), _MODULE.get_function("nms_reduce")


def batched_nms(boxes, scores, class_ids, batch_idx, iou_threshold: float, max_per_image: int):
    """Indices (K,) int64 (CuPy) of the boxes kept, ordered by batch_idx, then score descending, then index.

    boxes (M, 4) float32 xyxy; scores (M,) float32; class_ids (M,) int32 (>= 0); batch_idx (M,) int32,
    all CuPy arrays on the current device. Same rules and result as `pipeline.detect.nms.batched_nms`.
    """
    order, kept = ranked_keep(boxes, scores, class_ids, batch_idx, iou_threshold, max_per_image)
    return order[kept]


def ranked_keep(boxes, scores, class_ids, batch_idx, iou_threshold: float | None, max_per_image: int):
    """(order (M,) int64, kept (M,) bool), both CuPy: `order[kept]` is `batched_nms`'s result, and the
    kept rows come first in `order`.

    Fixed-size results so a caller can gather and copy everything with one host sync. The only
    host copy in here is the (image, class) group layout, which sizes the NMS kernels.
    iou_threshold None: no suppression, only the per-image cap (top-k for end-to-end heads).
    """
    import cupy  # noqa: PLC0415 - GPU only

    m = int(scores.shape[0])
    index = cupy.arange(m, dtype=np.int64)
    if m == 0:
        return index, cupy.zeros(0, bool)
    scores = cupy.asarray(scores, np.float32)
    batch_idx = cupy.asarray(batch_idx, np.int64)
    if iou_threshold is None:
        kept = cupy.ones(m, bool)
    else:
        group = (batch_idx << 32) | cupy.asarray(class_ids, np.int64)  # (image, class) in one sortable key
        order = _sort(group, -scores, index)
        kept = cupy.empty(m, bool)
        kept[order] = _suppress(cupy.ascontiguousarray(boxes, np.float32)[order], group[order], np.float32(iou_threshold))
    order = _sort(~kept, batch_idx, -scores, index)
    return order, _cap_per_image(order, kept[order], batch_idx[order], max_per_image)


def _sort(*keys):
    """Indices that sort lexicographically by `keys`, first key most significant, all ascending."""
    import cupy  # noqa: PLC0415 - GPU only

    return cupy.lexsort(cupy.stack([k.astype(np.float64) for k in reversed(keys)]))


def _suppress(boxes, group, threshold: np.float32):
    """Boolean keep mask (M,) over boxes already sorted by (group, score desc, index)."""
    import cupy  # noqa: PLC0415 - GPU only

    m = int(group.shape[0])
    starts_mask = cupy.concatenate([cupy.ones(1, bool), group[1:] != group[:-1]])
    starts_host = np.flatnonzero(starts_mask.get())  # the one host copy: kernel shapes depend on it
    sizes_host = np.diff(np.append(starts_host, m)).astype(np.int32)
    blocks = (sizes_host.astype(np.int64) + 63) // 64
    words = sizes_host.astype(np.int64) * blocks
    word_offset = np.concatenate([[0], np.cumsum(words)[:-1]]).astype(np.int64)
    max_blocks = int(blocks.max())
    starts, sizes, offsets = (cupy.asarray(a) for a in (starts_host.astype(np.int64), sizes_host, word_offset))
    box_group = (cupy.cumsum(starts_mask) - 1).astype(np.int32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = cupy.maximum(x2 - x1, 0) * cupy.maximum(y2 - y1, 0)
    mask = cupy.empty(int(words.sum()), np.uint64)
    keep = cupy.zeros(m, np.uint8)
    mask_kernel, reduce_kernel = _kernels()
    threads = 128
    total = m * max_blocks
    mask_kernel(
        ((total + threads - 1) // threads,), (threads,),
        (boxes, areas.astype(np.float32), box_group, starts, sizes, offsets, np.int32(m), np.int32(max_blocks),
         threshold, mask),
    )  # fmt: skip
    reduce_kernel((len(sizes_host),), (64,), (mask, starts, sizes, offsets, keep), shared_mem=max_blocks * 8)
    return keep.astype(bool)


def _cap_per_image(order, kept, images, max_per_image: int):
    """`kept` (in `order`'s order, kept rows first, grouped by image) limited to the first
    `max_per_image` of each image, without a host sync."""
    import cupy  # noqa: PLC0415 - GPU only

    m = int(order.shape[0])
    position = cupy.arange(m, dtype=np.int64)
    first = cupy.concatenate([cupy.ones(1, bool), (images[1:] != images[:-1]) | (kept[1:] != kept[:-1])])
    segment = cupy.cumsum(first) - 1
    segment_start = cupy.empty(m + 1, np.int64)
    segment_start[cupy.where(first, segment, m)] = position  # each segment's first row writes its start; the rest slot m
    return kept & (position - segment_start[segment] < max_per_image)
