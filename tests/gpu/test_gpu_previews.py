"""Console previews of device frames: an NV12 picture on the GPU is decimated there and only the small copy
crosses to the host, giving what the same picture in host memory gives."""
from __future__ import annotations

import av
import numpy as np
import pytest

from pipeline.service.previews import small_rgb
from pipeline.types import Frame

pytestmark = pytest.mark.gpu


def test_a_device_nv12_frame_gives_the_same_preview_as_the_host_one():
    import cupy  # noqa: PLC0415

    x = np.linspace(0, 255, 1920, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, 1080, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    nv12 = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray()
    host = small_rgb(Frame("cam", 0, 0, 0, nv12, 1920, 1080, pixel_format="nv12"), 320)
    device = small_rgb(Frame("cam", 0, 0, 0, cupy.asarray(nv12), 1920, 1080, pixel_format="nv12"), 320)
    assert isinstance(device, np.ndarray) and device.shape == host.shape == (180, 320, 3)
    assert np.array_equal(device, host)
