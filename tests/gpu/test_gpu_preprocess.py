"""The fused NV12 letterbox kernel gives what the CPU letterbox gives for the same decoded frame."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.preprocess import PreprocessSpec, allocate, preprocess_into
from pipeline.detect.preprocess_gpu import GpuPreprocessor
from pipeline.errors import EngineError
from pipeline.types import Frame
from tests.gpu.helpers import decode_clip, gpu_file

YOLOX = PreprocessSpec(416, 416, align="top_left", color="bgr", scale=1.0)
ULTRALYTICS = PreprocessSpec(640, 384, align="center", color="rgb", scale=1 / 255)
NORMALISED = PreprocessSpec(320, 320, resize="stretch", color="rgb", scale=1 / 255,
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _frames(decoded) -> list[Frame]:
    return [Frame("s", i, d.pts_ns, 0, d.image, d.width, d.height, d.pixel_format)
            for i, d in enumerate(decoded)]


def _both(clip: str, spec: PreprocessSpec, dtype, antialias=True, count=4):
    import cupy

    path = gpu_file(clip)
    cpu = decode_clip(path, "cpu", limit=count)
    gpu = _frames(decode_clip(path, "nvdec", limit=count))
    expected = allocate(count, spec)
    scale_cpu, pad_cpu = preprocess_into([f.image for f in cpu], spec, expected)
    out = cupy.zeros((count + 2, 3, spec.height, spec.width), dtype)
    scale_gpu, pad_gpu = GpuPreprocessor(spec, antialias=antialias)(gpu, out)
    return expected, out[:count].get().astype(np.float32), (scale_cpu, pad_cpu), (scale_gpu, pad_gpu), out


@pytest.mark.parametrize("clip", ["media/car-detection.mp4", "media/dog-phone-1080p.mp4"])
@pytest.mark.parametrize("spec", [YOLOX, ULTRALYTICS, NORMALISED], ids=["yolox", "ultralytics", "normalised"])
def test_gpu_letterbox_matches_cpu_letterbox_of_the_same_frame(clip, spec, report):
    expected, got, (s_cpu, p_cpu), (s_gpu, p_gpu), _ = _both(clip, spec, np.float32)
    np.testing.assert_array_equal(s_gpu, s_cpu)
    np.testing.assert_array_equal(p_gpu, p_cpu)
    level = spec.scale / min(spec.std)  # one 8-bit step in model units
    diff = np.abs(got - expected) / level
    report(f"preprocess_parity[{clip},{spec.width}x{spec.height},{spec.color}]",
           max_abs_levels=float(diff.max()), mean_abs_levels=float(diff.mean()),
           p99_levels=float(np.percentile(diff, 99)))
    assert diff.mean() < 1.5
    assert np.percentile(diff, 99) <= 12


def test_fp16_output_equals_fp32_output_rounded():
    _, got32, *_ = _both("media/car-detection.mp4", YOLOX, np.float32, count=2)
    _, got16, *_ = _both("media/car-detection.mp4", YOLOX, np.float16, count=2)
    np.testing.assert_array_equal(got16, got32.astype(np.float16).astype(np.float32))


def test_padding_rows_hold_the_pad_value_and_rows_past_the_batch_are_untouched():
    _, got, _, (scale, pad), out = _both("media/car-detection.mp4", YOLOX, np.float32, count=2)
    new_h = int(round(432 * scale[0, 1]))
    assert pad[0].tolist() == [0, 0]  # YOLOX letterbox is top-left
    assert np.all(got[:, :, new_h:, :] == 114)
    assert float(abs(out[2:]).max()) == 0.0


def test_plain_bilinear_stays_close_to_the_antialiased_filter_on_an_sd_clip():
    expected, got, *_ = _both("media/car-detection.mp4", YOLOX, np.float32, antialias=False, count=2)
    assert np.abs(got - expected).mean() < 3.0


def test_host_frames_are_refused_with_a_message_naming_the_stream():
    import cupy

    frame = Frame("cam-4", 0, 0, 0, np.zeros((48, 64, 3), np.uint8), 64, 48)
    out = cupy.zeros((1, 3, 416, 416), np.float32)
    with pytest.raises(EngineError, match="cam-4.*nvdec"):
        GpuPreprocessor(YOLOX)([frame], out)


def test_staging_uploads_mixed_tables_and_reuses_its_buffers():
    import cupy

    from pipeline.detect.preprocess_gpu import Staging

    staging, stream = Staging(), cupy.cuda.Stream(non_blocking=True)
    for rows in (3, 64, 5):  # grows once, then reuses the larger buffers
        tables = (np.arange(rows, dtype=np.uint64) << 40, np.arange(rows * 8, dtype=np.int32).reshape(rows, 8),
                  np.linspace(0, 1, rows * 2, dtype=np.float32).reshape(rows, 2))
        with stream:
            got = staging.upload(tables, stream)
            host = [g.get() for g in got]
        for expected, g in zip(tables, host):
            assert g.dtype == expected.dtype
            np.testing.assert_array_equal(g, expected)
