"""GPU preprocessing: device NV12 frames -> the engine's letterboxed, normalised NCHW batch, in one kernel.

The kernel reads each decoded NV12 frame where the decoder left it, converts YUV to RGB (BT.601 or
BT.709, limited range, nearest chroma: what PyAV's `rgb24` conversion gives), resizes with a
triangle filter (plain bilinear when enlarging, antialiased like swscale's bilinear when shrinking),
rounds to 8 bits like the CPU path, then applies scale, mean and std and writes FP16 or FP32 straight
into row `i` of the engine's input batch. Placement (scale, pad) comes from the CPU module's
`placement()`, so model coordinates map back to source pixels identically on both paths.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from pipeline.detect.preprocess import PreprocessSpec, placement
from pipeline.errors import EngineError
from pipeline.types import Frame

Matrix = Literal["auto", "bt601", "bt709"]

# (cy, crv, cgu, cgv, cbu): R = cy(Y-16) + crv(V-128); G = cy(Y-16) - cgu(U-128) - cgv(V-128); B = cy(Y-16) + cbu(U-128)
MATRICES = {
    "bt601": (76309 / 65536, 104597 / 65536, 25675 / 65536, 53279 / 65536, 132201 / 65536),
    "bt709": (1.164383, 1.792741, 0.213249, 0.532909, 2.112402),
}

_SOURCE = r"""
#ifdef OUT_HALF
#include <cuda_fp16.h>
typedef __half out_t;
__device__ __forceinline__ out_t to_out(float v) { return __float2half_rn(v); }
#else
typedef float out_t;
__device__ __forceinline__ out_t to_out(float v) { return v; }
#endif

__device__ __forceinline__ float clamp255(float v) { return fminf(fmaxf(rintf(v), 0.f), 255.f); }

// geom per row: src_w, src_h, pitch, px, py, new_w, new_h, matrix (0 = BT.601, 1 = BT.709)
// fgeom per row: sx, sy (model pixels per source pixel)
extern "C" __global__ void nv12_letterbox(
    const unsigned long long* __restrict__ src, const int* __restrict__ geom, const float* __restrict__ fgeom,
    const float* __restrict__ coef, out_t* __restrict__ out, int out_w, int out_h,
    float pix_scale, float m0, float m1, float m2, float s0, float s1, float s2,
    float pad_value, int bgr, int antialias)
{
    const int b = blockIdx.y;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= out_w * out_h) return;
    const int x = idx % out_w, y = idx / out_w;
    const int* g = geom + 8 * b;
    const int src_w = g[0], src_h = g[1], pitch = g[2], px = g[3], py = g[4], new_w = g[5], new_h = g[6];
    float rgb[3];
    if (x < px || y < py || x >= px + new_w || y >= py + new_h) {
        rgb[0] = rgb[1] = rgb[2] = pad_value;
    } else {
        const unsigned char* luma = (const unsigned char*)src[b];
        const unsigned char* chroma = luma + (size_t)src_h * pitch;
        const float* c = coef + 5 * g[7];
        const float sx = fgeom[2 * b], sy = fgeom[2 * b + 1];
        const float cx = (x - px + 0.5f) / sx - 0.5f, cy = (y - py + 0.5f) / sy - 0.5f;
        const float rx = (antialias && sx < 1.f) ? 1.f / sx : 1.f;
        const float ry = (antialias && sy < 1.f) ? 1.f / sy : 1.f;
        const float irx = 1.f / rx, iry = 1.f / ry;  // the triangle's slopes: no division per tap
        const int x0 = (int)ceilf(cx - rx), x1 = (int)floorf(cx + rx);
        const int y0 = (int)ceilf(cy - ry), y1 = (int)floorf(cy + ry);
        float acc[3] = {0.f, 0.f, 0.f}, total = 0.f;
        for (int ty = y0; ty <= y1; ++ty) {
            const float wy = 1.f - fabsf(ty - cy) * iry;
            if (wy <= 0.f) continue;
            const int sy_i = min(max(ty, 0), src_h - 1);
            const unsigned char* lrow = luma + (size_t)sy_i * pitch;
            const unsigned char* crow = chroma + (size_t)(sy_i >> 1) * pitch;
            for (int tx = x0; tx <= x1; ++tx) {
                const float wx = 1.f - fabsf(tx - cx) * irx;
                if (wx <= 0.f) continue;
                const int sx_i = min(max(tx, 0), src_w - 1);
                const float l = c[0] * ((float)lrow[sx_i] - 16.f);
                const float u = (float)crow[sx_i & ~1] - 128.f, v = (float)crow[(sx_i & ~1) + 1] - 128.f;
                const float w = wx * wy;
                acc[0] += w * clamp255(l + c[1] * v);
                acc[1] += w * clamp255(l - c[2] * u - c[3] * v);
                acc[2] += w * clamp255(l + c[4] * u);
                total += w;
            }
        }
        for (int k = 0; k < 3; ++k) rgb[k] = clamp255(acc[k] / total);
    }
    const float mean[3] = {m0, m1, m2}, stdv[3] = {s0, s1, s2};
    const size_t plane = (size_t)out_w * out_h;
    out_t* dst = out + (size_t)b * 3 * plane + idx;
    for (int ch = 0; ch < 3; ++ch) {
        const float value = rgb[bgr ? 2 - ch : ch] * pix_scale;
        dst[ch * plane] = to_out((value - mean[ch]) / stdv[ch]);
    }
}
"""

_KERNELS: dict[str, Any] = {}


def _kernel(half: bool):
    """The compiled kernel for FP16 or FP32 output (compiled once per process, cached by CuPy on disk)."""
    import cupy  # noqa: PLC0415 - GPU only

    key = "half" if half else "float"
    if key not in _KERNELS:
        options = ("-DOUT_HALF",) if half else ()
        _KERNELS[key] = cupy.RawKernel(_SOURCE, "nv12_letterbox", options=options)
    return _KERNELS[key]


class Staging:
    """Small per-batch host tables (frame pointers, geometry, sizes) sent to the device in one truly
    asynchronous copy from pinned memory; a copy from ordinary memory may wait for the stream.

    `upload(arrays, stream)` returns device arrays of the same shapes and dtypes. The buffers are
    reused: the previous upload is waited for (an event, normally long done) before they are rewritten.
    """

    ALIGN = 16

    def __init__(self):
        self._host = None
        self._device = None
        self._done = None

    def upload(self, arrays: Sequence[np.ndarray], stream) -> list:
        import cupy  # noqa: PLC0415 - GPU only
        import cupyx  # noqa: PLC0415 - GPU only

        offsets, total = [], 0
        for a in arrays:
            offsets.append(total)
            total += -(-a.nbytes // self.ALIGN) * self.ALIGN
        if self._host is None or self._host.nbytes < total:
            if self._done is not None:
                self._done.synchronize()
            self._host = cupyx.empty_pinned(max(total, 4096), np.uint8)
            self._device = cupy.empty(self._host.nbytes, np.uint8)
        elif self._done is not None:
            self._done.synchronize()
        for a, offset in zip(arrays, offsets):
            self._host[offset : offset + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        self._device.data.copy_from_host_async(self._host.ctypes.data, total, stream)
        self._done = stream.record()
        return [self._device[offset : offset + a.nbytes].view(a.dtype).reshape(a.shape) for a, offset in zip(arrays, offsets)]


def matrix_for(height: int, matrix: Matrix = "auto") -> str:
    """The YUV->RGB matrix of a frame: "auto" takes BT.709 for HD (height >= 720) and BT.601 below.

    The decoder's frames carry no colour metadata yet; HD cameras signal BT.709 and SD ones BT.601
    almost always, which is also what PyAV follows when the stream says so.
    """
    if matrix != "auto":
        return matrix
    return "bt709" if height >= 720 else "bt601"


class GpuPreprocessor:
    """NV12 device frames -> rows of a (B, 3, H, W) float16/float32 CuPy batch, placed like the CPU path.

    antialias: widen the filter when shrinking (closer to the CPU path's swscale and steadier small
    objects, at ~20x the texture reads for 1080p -> 416); False is plain 2x2 bilinear.
    matrix: YUV->RGB conversion; "auto" picks by frame height (see `matrix_for`).
    """

    def __init__(self, spec: PreprocessSpec, *, antialias: bool = True, matrix: Matrix = "auto"):
        import cupy  # noqa: PLC0415 - GPU only

        self.spec = spec
        self.antialias = antialias
        self.matrix = matrix
        self._coef = cupy.asarray(np.asarray([MATRICES["bt601"], MATRICES["bt709"]], np.float32))
        self._staging = Staging()

    def __call__(self, frames: Sequence[Frame], out, stream=None) -> tuple[np.ndarray, np.ndarray]:
        """Write rows 0..n-1 of `out` (B, 3, H, W) float16/float32 C-contiguous from n NV12 frames.

        Work is queued on `stream` (CuPy stream; default: the current one); the frames must be
        complete (NVDEC frames are: the decoder synchronises before handing them on). Returns host
        `scale (n, 2) float32` (sx, sy) and `pad (n, 2) float32` (x, y) with
        `model = source * scale + pad`, exactly as `preprocess.preprocess_into` reports them.
        """
        import cupy  # noqa: PLC0415 - GPU only

        n = len(frames)
        self._check_output(out, n)
        stream = stream or cupy.cuda.get_current_stream()
        tables, scale, pad = self.describe(frames)
        if n == 0:
            return scale, pad
        with stream:
            self.launch(self._staging.upload(tables, stream), out, n)
        return scale, pad

    def describe(self, frames: Sequence[Frame]) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
        """(host tables the kernel reads, scale (n, 2), pad (n, 2)) for `launch`; a caller that uploads
        other per-batch tables too can send them all in one `Staging.upload`."""
        ptrs, geom, fgeom, scale, pad = self._tables(frames)
        return (ptrs, geom, fgeom), scale, pad

    def launch(self, device_tables, out, n: int) -> None:
        """Queue the kernel on the current stream for rows 0..n-1 of `out`, from `describe`'s tables on the device."""
        self._check_output(out, n)
        self._launch(*device_tables, out, n)

    def _tables(self, frames: Sequence[Frame]):
        """Host arrays the kernel reads: pointers (n,) uint64, geometry (n, 8) int32, scales (n, 2) float32."""
        n = len(frames)
        ptrs = np.empty(n, np.uint64)
        geom = np.empty((n, 8), np.int32)
        scale = np.empty((n, 2), np.float32)
        pad = np.empty((n, 2), np.float32)
        for row, frame in enumerate(frames):
            image = _nv12_image(frame)
            p = placement(frame.width, frame.height, self.spec)
            ptrs[row] = image.data.ptr
            matrix = 1 if matrix_for(frame.height, self.matrix) == "bt709" else 0
            geom[row] = (frame.width, frame.height, image.strides[0], p.px, p.py, p.new_w, p.new_h, matrix)
            scale[row] = (p.sx, p.sy)
            pad[row] = (p.px, p.py)
        return ptrs, geom, scale.copy(), scale, pad

    def _launch(self, ptrs, geom, fgeom, out, n: int) -> None:
        spec = self.spec
        plane = spec.width * spec.height
        threads = 256
        args = (
            ptrs, geom, fgeom, self._coef, out, np.int32(spec.width), np.int32(spec.height),
            np.float32(spec.scale), *map(np.float32, spec.mean), *map(np.float32, spec.std),
            np.float32(spec.pad_value), np.int32(spec.color == "bgr"), np.int32(self.antialias),
        )  # fmt: skip
        _kernel(out.dtype == np.float16)(((plane + threads - 1) // threads, n), (threads,), args)

    def _check_output(self, out, n: int) -> None:
        spec = self.spec
        expected = (3, spec.height, spec.width)
        if out.ndim != 4 or tuple(out.shape[1:]) != expected or out.shape[0] < n:
            raise EngineError(f"GPU preprocess: output batch {tuple(out.shape)} cannot hold {n} rows of {expected}")
        if out.dtype not in (np.float16, np.float32) or not out.flags.c_contiguous:
            raise EngineError(f"GPU preprocess: output must be C-contiguous float16 or float32, got {out.dtype}")


def _nv12_image(frame: Frame):
    """The frame's (H*3/2, W) uint8 device array, or EngineError naming the stream."""
    image = frame.image
    if frame.pixel_format != "nv12" or not hasattr(image, "data") or not hasattr(image.data, "ptr"):
        raise EngineError(
            f"stream '{frame.stream_id}': GPU preprocessing needs device NV12 frames, got {frame.pixel_format}; "
            "use decode 'nvdec' (or 'auto' on a GPU machine)"
        )
    h = frame.height
    if image.dtype != np.uint8 or tuple(image.shape) != (h * 3 // 2, frame.width) or image.strides[1] != 1:
        raise EngineError(
            f"stream '{frame.stream_id}': NV12 image must be ({h * 3 // 2}, {frame.width}) uint8 with unit column "
            f"stride, got {tuple(image.shape)} {image.dtype}"
        )
    return image


def nv12_to_rgb_reference(nv12: np.ndarray, width: int, height: int, matrix: str = "bt601") -> np.ndarray:
    """Host reference of the kernel's colour conversion: (H*3/2, W) uint8 NV12 -> (H, W, 3) uint8 RGB.

    Used by tests to check the kernel's arithmetic against PyAV without a GPU.
    """
    cy, crv, cgu, cgv, cbu = (np.float32(v) for v in MATRICES[matrix])
    y = nv12[:height].astype(np.float32)
    uv = nv12[height : height * 3 // 2].reshape(height // 2, width // 2, 2).astype(np.float32) - 128
    u = np.repeat(np.repeat(uv[..., 0], 2, 0), 2, 1)[:height, :width]
    v = np.repeat(np.repeat(uv[..., 1], 2, 0), 2, 1)[:height, :width]
    luma = cy * (y - 16)
    rgb = np.stack([luma + crv * v, luma - cgu * u - cgv * v, luma + cbu * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
