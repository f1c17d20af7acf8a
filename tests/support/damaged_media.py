"""Clips made with PyAV for damage tests: H.264 noise that scrolls (large packets, as a camera's are), and
the means to damage them: overwrite a stretch with random bytes, find each packet's place in the file."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FRAMES, GOP = 96, 25
CONTAINERS = {"mp4": None, "h264": "h264"}  # suffix -> the format PyAV writes it with


def write_clip(path: Path, frames: int = FRAMES, size: tuple[int, int] = (320, 240)) -> Path:
    """Noise scrolling sideways (so packets are large, as a camera's are), H.264, a keyframe every GOP frames."""
    base = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    with av.open(str(path), "w", format=CONTAINERS[path.suffix[1:]]) as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.gop_size = GOP
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")))
        out.mux(stream.encode(None))
    return path


def write_leaping_ts(path: Path, frames: int, leap_at: int, leap_s: int) -> Path:
    """MPEG-TS, H.264 at 25 fps without B-frames, where frame `leap_at` alone has a pts `leap_s` seconds ahead (its dts
    stays in line), as a camera's RTP timestamp glitch records."""
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "bframes": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        pictures = [av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24") for i in range(frames)]
        for packet in [p for picture in pictures + [None] for p in stream.encode(picture)]:
            if packet.pts * packet.time_base == Fraction(leap_at, 25):
                packet.pts += int(leap_s / packet.time_base)
            out.mux(packet)
    return path


def packet_spans(path: Path) -> list[tuple[int, int]]:
    """(file offset, size) of each video packet."""
    with av.open(str(path), format=CONTAINERS[path.suffix[1:]]) as container:
        return [(p.pos, p.size) for p in container.demux(video=0) if p.size]


def overwrite(path: Path, offset: int, length: int) -> None:
    """Random bytes over `length` bytes from `offset` (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    length = min(length, len(data) - offset)
    data[offset:offset + length] = np.random.default_rng(1).integers(0, 256, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def last_picture(path: Path) -> np.ndarray:
    with av.open(str(path), format=CONTAINERS[path.suffix[1:]]) as container:
        *_, last = container.decode(video=0)
    return last.to_ndarray(format="rgb24")


def faststart(source: Path, target: Path) -> Path:
    with av.open(str(source)) as src, av.open(str(target), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    return target
