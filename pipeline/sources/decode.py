"""CPU decoding with PyAV: packets in, host RGB frames out."""
from __future__ import annotations

import av

from pipeline.errors import CorruptPacket
from pipeline.sources.reader import DecodedFrame
from pipeline.types import pts_to_ns


class CpuDecoder:
    """Decodes one PyAV video stream on the CPU into `(H, W, 3) uint8` RGB frames.

    threads: decoder threads (0 = one per core). Frame threading adds a few frames of latency
    but multiplies throughput; live streams with tight latency budgets can set 1.
    A mid-stream resolution change is followed: each frame reports its own size.
    """

    wants_annexb = False
    reusable = False

    def __init__(self, stream: av.video.stream.VideoStream, label: str, threads: int = 0):
        self._label = label
        self._codec = stream.codec_context
        self._codec.thread_type = "AUTO"
        self._codec.thread_count = threads
        self._time_base = stream.time_base

    def decode(self, packet: av.Packet) -> list[DecodedFrame]:
        """The frames `packet` completed, in display order; `CorruptPacket` when FFmpeg refuses it."""
        try:
            return [self._convert(f) for f in self._codec.decode(packet)]
        except av.error.FFmpegError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror}"
            raise CorruptPacket(f"{self._label}: cannot decode a packet ({reason})") from exc

    def flush(self) -> list[DecodedFrame]:
        """The frames the decoder still holds at the end of the stream; `CorruptPacket` when FFmpeg
        refuses what it held (a file cut inside a frame)."""
        try:
            return [self._convert(f) for f in self._codec.decode(None)]
        except av.error.EOFError:
            return []
        except av.error.FFmpegError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror}"
            raise CorruptPacket(f"{self._label}: cannot flush the decoder ({reason})") from exc

    def close(self) -> None:
        """Nothing to free beyond the container, which the demuxer closes."""

    def _convert(self, frame: av.VideoFrame) -> DecodedFrame:
        time_base = frame.time_base or self._time_base
        return DecodedFrame(
            image=frame,  # converted later, once, at the model's size (see pipeline.types.frame_to_rgb)
            pts_ns=pts_to_ns(frame.pts, time_base),
            width=frame.width,
            height=frame.height,
            pixel_format="avframe",
            damaged=frame.is_corrupt,
        )
