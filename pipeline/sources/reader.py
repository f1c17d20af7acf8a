"""What a source yields (`DecodedFrame`), the two protocols a source is built from, and where its frames go.

A `Reader` is one pass over one stream: it opens on the first `next()` of `frames()`, yields decoded
pictures in display order and returns when the stream ends. Looping, fps caps and reconnects belong
to `StreamWorker`, which opens a new reader for every pass.

A `Decoder` turns demuxed `av.Packet`s into `DecodedFrame`s. Two back-ends share the protocol:
`CpuDecoder` (PyAV, host RGB) and `pipeline.sources.nvdec.NvdecDecoder` (device NV12).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from pipeline.types import Frame


@dataclass(slots=True)
class DecodedFrame:
    """One decoded picture, before it is given a stream id and a sequence number.

    image: host `(H, W, 3) uint8` RGB numpy array (`pixel_format="rgb24"`), device NV12
    `(H*3/2, W) uint8` cupy array (`pixel_format="nv12"`), or PyAV's decoded `av.VideoFrame`
    (`pixel_format="avframe"`, converted later at the model's size; see `pipeline.types.frame_to_rgb`).
    pts_ns: integer nanoseconds on the stream's clock (`PTS_UNKNOWN` only between decoder and reader).
    damaged: the decoder concealed damage in it (its packet, or one it refers to, was corrupt); FFmpeg's CPU
    decoders say so, NVDEC does not.
    arrived_ns: a live stream's: when its packet was read (host `time.time_ns()`), its capture time as far as this
    host can know it; None for a file.
    """

    image: Any
    pts_ns: int
    width: int
    height: int
    pixel_format: str = "rgb24"
    damaged: bool = False
    arrived_ns: int | None = None


class Reader(Protocol):
    """One pass over one stream. `frames()` raises `SourceError` and returns when the stream ends."""

    live: bool

    def frames(self) -> Iterator[DecodedFrame]: ...

    def counters(self) -> dict[str, int]:
        """What the pass counted, any of: `skipped_late` (frames a live source skipped to keep up),
        `pts_repaired` (timestamps made up or nudged), `tap_errors` (packet-tap failures),
        `corrupt_packets` (packets skipped as undecodable, or decoded into a damaged frame). Called from other
        threads while `frames()` runs (the stream's stats count a pass as it goes): read counts only, never block."""
        ...

    def close(self) -> None: ...


class Decoder(Protocol):
    """Packets in, pictures out (display order).

    `wants_annexb`: the demuxer converts MP4/MKV H.264/HEVC packets to Annex-B before `decode`.
    `reusable`: after `flush()` it can take the next pass of a looped file (see `pyav.DecoderShelf`).
    `decode(packet)` returns the frames that packet completed (often none, sometimes several);
    `flush()` returns the frames still held at the end of the stream. A packet the decoder refuses raises
    `CorruptPacket` (the reader skips it and goes on); other errors raise `SourceError`.
    """

    wants_annexb: bool
    reusable: bool

    def decode(self, packet: Any) -> list[DecodedFrame]: ...

    def flush(self) -> list[DecodedFrame]: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Where a stream's worker puts its frames (`pipeline.align.buffer.AlignedBuffer`)."""

    def put(self, frame: Frame, timeout: float) -> bool: ...

    def end_stream(self, stream_id: str) -> None: ...


class Pictures(Protocol):
    """Where NVDEC pictures go, and how the ones never sent come back (`processes.slots.SlotPool`)."""

    def allocate(self, rows: int, width: int) -> Any: ...

    def discard(self, image: Any) -> None: ...

    def reclaim(self) -> None: ...
