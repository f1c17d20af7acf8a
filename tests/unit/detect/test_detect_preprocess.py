"""Letterbox / stretch preprocessing and its exact inverse."""
import numpy as np
import pytest

from pipeline.detect.preprocess import (
    PreprocessSpec,
    allocate,
    clip_boxes,
    placement,
    preprocess_into,
    to_source,
)


def _image_with_box(w, h, box, color=(255, 255, 255)):
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = color
    return image


def _bright_box(plane: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(plane > 0.5 * plane.max())
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("align", ["center", "top_left"])
@pytest.mark.parametrize("size", [(768, 432), (300, 500), (640, 640)])
def test_letterbox_box_maps_back_to_its_source_pixels(align, size):
    w, h = size
    box = (w // 4, h // 3, w // 2, h // 2 + 20)
    spec = PreprocessSpec(416, 416, align=align, scale=1 / 255)
    out = allocate(1, spec)
    scale, pad = preprocess_into([_image_with_box(w, h, box)], spec, out)
    found = np.asarray([_bright_box(out[0, 0])], np.float32)
    back = to_source(found, scale, pad, (w, h))
    np.testing.assert_allclose(back[0], box, atol=2.0)


def test_letterbox_pads_centered_for_ultralytics_and_bottom_right_for_yolox():
    image = np.full((432, 768, 3), 200, np.uint8)
    centered = allocate(1, PreprocessSpec(416, 416, align="center", scale=1.0))
    _, pad_c = preprocess_into([image], PreprocessSpec(416, 416, align="center", scale=1.0), centered)
    top_left = allocate(1, PreprocessSpec(416, 416, align="top_left", scale=1.0))
    _, pad_t = preprocess_into([image], PreprocessSpec(416, 416, align="top_left", scale=1.0), top_left)
    assert pad_c[0].tolist() == [0, 91]  # (416 - 234) / 2
    assert pad_t[0].tolist() == [0, 0]
    assert centered[0, 0, 0, 0] == 114 and centered[0, 0, 91, 0] == 200 and centered[0, 0, 415, 0] == 114
    assert top_left[0, 0, 0, 0] == 200 and top_left[0, 0, 233, 0] == 200 and top_left[0, 0, 234, 0] == 114


def test_stretch_fills_the_input_and_inverts_per_axis():
    w, h = 768, 432
    box = (100, 50, 300, 200)
    spec = PreprocessSpec(320, 320, resize="stretch")
    out = allocate(1, spec)
    scale, pad = preprocess_into([_image_with_box(w, h, box)], spec, out)
    assert pad[0].tolist() == [0, 0]
    np.testing.assert_allclose(scale[0], [320 / 768, 320 / 432], rtol=1e-6)
    back = to_source(np.asarray([_bright_box(out[0, 0])], np.float32), scale, pad)
    np.testing.assert_allclose(back[0], box, atol=3.0)


def test_channel_order_scale_mean_and_std_are_applied():
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    spec = PreprocessSpec(64, 64, color="bgr", scale=1.0, mean=(1, 2, 3), std=(2, 2, 2))
    out = allocate(1, spec)
    preprocess_into([image], spec, out)
    assert out[0, :, 5, 5].tolist() == [(30 - 1) / 2, (20 - 2) / 2, (10 - 3) / 2]


def test_rows_of_a_batch_get_their_own_geometry():
    spec = PreprocessSpec(416, 416)
    out = allocate(2, spec)
    scale, pad = preprocess_into([np.zeros((432, 768, 3), np.uint8), np.zeros((500, 300, 3), np.uint8)], spec, out)
    assert scale.shape == (2, 2) and pad.shape == (2, 2)
    assert pad[0, 0] == 0 and pad[0, 1] > 0
    assert pad[1, 0] > 0 and pad[1, 1] == 0


def test_batch_larger_than_buffer_is_refused():
    spec = PreprocessSpec(32, 32)
    with pytest.raises(ValueError, match="does not fit"):
        preprocess_into([np.zeros((8, 8, 3), np.uint8)] * 3, spec, allocate(2, spec))


def test_placement_keeps_aspect_ratio_within_the_input():
    p = placement(1920, 1080, PreprocessSpec(640, 640))
    assert (p.new_w, p.new_h) == (640, 360) and (p.px, p.py) == (0, 140)


def test_boxes_are_clipped_to_the_frame():
    boxes = np.asarray([[-5, -3, 900, 500], [10, 10, 20, 20]], np.float32)
    clip_boxes(boxes, (768, 432))
    assert boxes.tolist() == [[0, 0, 768, 432], [10, 10, 20, 20]]


def test_a_decoded_yuv_frame_is_letterboxed_like_its_rgb_conversion():
    """The CPU decoder hands over its own YUV frame; one swscale pass converts and resizes it."""
    import av

    rng = np.random.default_rng(3)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (36, 64, 3), dtype=np.uint8), 8, axis=0), 8, axis=1)  # smooth blocks
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    spec = PreprocessSpec(320, 320, color="bgr", scale=1.0)
    from_yuv, from_rgb = allocate(1, spec), allocate(1, spec)
    scale_a, pad_a = preprocess_into([yuv], spec, from_yuv)
    scale_b, pad_b = preprocess_into([yuv.to_ndarray(format="rgb24")], spec, from_rgb)
    assert np.array_equal(scale_a, scale_b) and np.array_equal(pad_a, pad_b)
    inside = (slice(None), slice(None), slice(int(pad_a[0, 1]) + 2, int(pad_a[0, 1]) + 178), slice(2, 318))
    assert np.abs(from_yuv[inside] - from_rgb[inside]).mean() < 3.0  # chroma upsampling differs slightly
    assert np.array_equal(from_yuv[0, :, 0, :], from_rgb[0, :, 0, :])  # identical padding rows
