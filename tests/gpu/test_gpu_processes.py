"""NVDEC in decode processes: frames that cross into this process through CUDA IPC are the frames
decoded here, bit for bit, also across resolution changes that outgrow a stream's slots."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.align.buffer import AlignedBuffer
from pipeline.config.models import LaneConfig, StreamConfig
from tests.gpu.helpers import decode_clip, gpu_file
from tests.support.batches import Taker, decode_in_children, stop_and_drain


def _growing_clip(path: Path) -> Path:
    """Annex-B H.264: 12 frames at 320x240, then 12 at 640x480 (the second needs bigger slots)."""
    with open(path, "wb") as out:
        for width, height in ((320, 240), (640, 480)):
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
            codec.time_base = Fraction(1, 25)
            codec.options = {"bframes": "0", "g": "6"}
            y, x = np.mgrid[0:height, 0:width]
            for i in range(12):
                rgb = np.stack([(x + 7 * i) % 256, (y + 3 * i) % 256, (x ^ y) % 256], axis=-1).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in codec.encode(frame):
                    out.write(bytes(packet))
            for packet in codec.encode(None):
                out.write(bytes(packet))
    return path


def _decode_in_children(paths: list[Path], processes: int) -> dict[str, list]:
    configs = [StreamConfig(id=f"s{i}", url=str(p), decode="nvdec", ring_size=2) for i, p in enumerate(paths)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=3, max_wait_ms=5)], configs)
    children = decode_in_children(configs, processes, buffer, "nvdec")
    taker = Taker(buffer)
    assert taker.until(lambda: buffer.finished, timeout=120)
    children.close()
    frames = taker.frames
    states = {w.config.id: w.state.value for w in children.workers}
    assert set(states.values()) == {"finished"}, states
    return frames


def test_frames_decoded_in_children_equal_frames_decoded_here(tmp_path):
    import cupy

    paths = [gpu_file("media/car-detection.mp4"), gpu_file("media/resolution-change.h264"),
             _growing_clip(tmp_path / "growing.h264")]
    received = _decode_in_children(paths, processes=2)
    for i, path in enumerate(paths):
        here = decode_clip(path, "nvdec")
        there = received[f"s{i}"]
        assert len(there) == len(here), path.name
        assert [f.seq for f in there] == list(range(len(here)))
        assert [f.pts_ns for f in there] == [f.pts_ns for f in here]
        assert [(f.width, f.height) for f in there] == [(f.width, f.height) for f in here]
        for a, b in zip(there, here):
            assert a.pixel_format == "nv12" and isinstance(a.image, cupy.ndarray)
            assert bool(cupy.array_equal(a.image, b.image)), (path.name, a.seq)
    sizes = [(f.width, f.height) for f in received["s2"]]
    assert sizes[0] == (320, 240) and sizes[-1] == (640, 480)


def test_live_nvdec_streams_of_a_killed_decode_process_go_on_in_a_new_one():
    import os
    import signal

    import cupy

    path = gpu_file("media/dog-848x464.mp4")
    here = [f.image for f in decode_clip(path, "nvdec")]
    configs = [StreamConfig(id=f"s{i}", url=str(path), decode="nvdec", live=True, ring_size=4,
                            reconnect_min_s=0.2, reconnect_max_s=0.5) for i in range(2)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], configs)
    children = decode_in_children(configs, 2, buffer, "nvdec")
    taker = Taker(buffer)
    frames = taker.frames
    assert taker.until(lambda: len(frames["s0"]) >= 20, timeout=60)
    victim = children.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert taker.until(lambda: victim.child == 2, timeout=60)  # a new child took it
    before = len(frames["s0"])
    assert taker.until(lambda: len(frames["s0"]) >= before + 30, timeout=60)
    assert victim.stats()["reconnects"] >= 1
    seqs = [f.seq for f in frames["s0"]]
    assert len(seqs) >= before + 30 and all(b > a for a, b in zip(seqs, seqs[1:]))
    for frame in frames["s0"][before:]:  # the new child's slots map: every picture is one of the clip's
        assert any(h.shape == frame.image.shape and bool(cupy.array_equal(frame.image, h)) for h in here)
    stop_and_drain(children, buffer)
