"""Class-aware batched NMS on the GPU (CuPy), returning exactly what `pipeline.detect.nms.batched_nms` returns.

Method (the classic bitmask NMS, per (image, class) group so groups never meet):
1. sort candidates by (group, score descending, index) - the reference's greedy order within a group;
2. one thread per (box, 64-box block of its group) writes a 64-bit word: bit t set when the IoU
   with box t of that block (ranked lower) is above the threshold;
3. one thread block per group walks its boxes in order, keeping a box unless a kept box's bit
   removed it, and ORs the kept box's words into the removed set (shared memory);
4. rank the kept boxes by (image, score descending, index) and cap each image at `max_per_image`.
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

    boxes (M, 4) float32 xyxy; scores (M,) float32; class_ids (M,) int32; batch_idx (M,) int32, all
    CuPy arrays on the current device. Same rules and result as `pipeline.detect.nms.batched_nms`.
    Work is queued on the current CuPy stream; one small device-to-host copy (group sizes) syncs it.
    """
    import cupy  # noqa: PLC0415 - GPU only

    m = int(scores.shape[0])
    if m == 0:
        return cupy.zeros(0, np.int64)
    boxes = cupy.ascontiguousarray(boxes, np.float32)
    scores = cupy.asarray(scores, np.float32)
    batch_idx = cupy.asarray(batch_idx, np.int64)
    class_ids = cupy.asarray(class_ids, np.int64)
    group = batch_idx * (int(class_ids.max()) + 1) + class_ids
    order = _sort(group, -scores, cupy.arange(m))
    keep_sorted = _suppress(boxes[order], group[order], np.float32(iou_threshold))
    kept = order[keep_sorted]
    ranked = kept[_sort(batch_idx[kept], -scores[kept], kept)]
    return _cap_per_image(ranked, batch_idx, max_per_image)


def _sort(primary, secondary, tiebreak):
    """Indices that sort by (primary, secondary, tiebreak), all ascending (lexicographic sort)."""
    import cupy  # noqa: PLC0415 - GPU only

    keys = cupy.stack([tiebreak.astype(np.float64), secondary.astype(np.float64), primary.astype(np.float64)])
    return cupy.lexsort(keys)


def _suppress(boxes, group, threshold: np.float32):
    """Boolean keep mask (M,) over boxes already sorted by (group, score desc, index)."""
    import cupy  # noqa: PLC0415 - GPU only

    m = int(group.shape[0])
    starts_mask = cupy.concatenate([cupy.ones(1, bool), group[1:] != group[:-1]])
    starts = cupy.flatnonzero(starts_mask)
    sizes = cupy.diff(cupy.concatenate([starts, cupy.asarray([m], starts.dtype)])).astype(np.int32)
    box_group = (cupy.cumsum(starts_mask) - 1).astype(np.int32)
    sizes_host = sizes.get()
    blocks = (sizes_host.astype(np.int64) + 63) // 64
    words = sizes_host.astype(np.int64) * blocks
    word_offset = np.concatenate([[0], np.cumsum(words)[:-1]]).astype(np.int64)
    max_blocks = int(blocks.max())
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = cupy.maximum(x2 - x1, 0) * cupy.maximum(y2 - y1, 0)
    mask = cupy.empty(int(words.sum()), np.uint64)
    keep = cupy.zeros(m, np.uint8)
    mask_kernel, reduce_kernel = _kernels()
    starts64 = starts.astype(np.int64)
    offsets = cupy.asarray(word_offset)
    threads = 128
    total = m * max_blocks
    mask_kernel(
        ((total + threads - 1) // threads,), (threads,),
        (boxes, areas.astype(np.float32), box_group, starts64, sizes, offsets, np.int32(m), np.int32(max_blocks),
         threshold, mask),
    )  # fmt: skip
    reduce_kernel(
        (len(sizes_host),), (64,), (mask, starts64, sizes, offsets, keep), shared_mem=max_blocks * 8
    )
    return keep.astype(bool)


def _cap_per_image(ranked, batch_idx, max_per_image: int):
    """The first `max_per_image` of each image in an image-grouped index list."""
    import cupy  # noqa: PLC0415 - GPU only

    if ranked.size == 0:
        return ranked.astype(np.int64)
    images = batch_idx[ranked]
    first = cupy.concatenate([cupy.ones(1, bool), images[1:] != images[:-1]])
    starts = cupy.flatnonzero(first)
    position = cupy.arange(ranked.size) - starts[cupy.cumsum(first) - 1]
    return ranked[position < max_per_image].astype(np.int64)
