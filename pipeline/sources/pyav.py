"""`PyAvReader`: one pass over a file or RTSP stream, demuxed by PyAV, decoded by a pluggable decoder."""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Callable, Iterator

import av

from pipeline.config.models import StreamConfig
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.demux import Demuxer
from pipeline.sources.reader import PTS_UNKNOWN, DecodedFrame, Decoder, mask_url

log = logging.getLogger(__name__)

PacketTap = Callable[[str, av.Packet], None]
DecoderFactory = Callable[[av.video.stream.VideoStream, str], Decoder]


class FrameClock:
    """Makes a pass's timestamps strictly increasing integer nanoseconds.

    With `index_clock` (raw streams, AVI) frame i is at `i / rate` seconds. Otherwise the decoder's
    pts is kept; a missing pts continues from the previous frame by one frame period and a pts that
    does not increase is nudged 1 ns past the previous one (both counted in `repaired`).
    """

    def __init__(self, rate: Fraction, index_clock: bool):
        self.rate = rate
        self.index_clock = index_clock
        self.frame_ns = self._at(1)
        self.count = 0
        self.repaired = 0
        self._last: int | None = None

    def _at(self, index: int) -> int:
        num = index * 1_000_000_000 * self.rate.denominator
        return (num + self.rate.numerator // 2) // self.rate.numerator

    def stamp(self, frame: DecodedFrame) -> DecodedFrame:
        pts = frame.pts_ns
        if self.index_clock:
            pts = self._at(self.count)
        elif pts == PTS_UNKNOWN:
            pts = 0 if self._last is None else self._last + self.frame_ns
            self.repaired += self._last is not None
        elif self._last is not None and pts <= self._last:
            pts = self._last + 1
            self.repaired += 1
        frame.pts_ns = pts
        self._last = pts
        self.count += 1
        return frame


def cpu_decoder(stream: av.video.stream.VideoStream, label: str) -> Decoder:
    return CpuDecoder(stream, label, threads=1)


class PyAvReader:
    """Reads one stream once: `frames()` opens it, yields `DecodedFrame`s and returns at its end.

    packet_tap: called with `(stream_id, packet)` for every demuxed packet before decoding (clip
    recording); a tap that raises is logged and counted in `tap_errors`, never stops decoding.
    make_decoder: `(video_stream, label) -> Decoder`; the CPU decoder by default.
    """

    def __init__(self, config: StreamConfig, packet_tap: PacketTap | None = None,
                 make_decoder: DecoderFactory = cpu_decoder):
        self.config = config
        self.live = config.is_live
        self.label = f"stream '{config.id}' ({mask_url(config.url)})"
        self.tap_errors = 0
        self.clock: FrameClock | None = None
        self._packet_tap = packet_tap
        self._make_decoder = make_decoder
        self._demuxer = Demuxer(config.url, self.label, transport=config.transport,
                                open_timeout_s=config.open_timeout_s, read_timeout_s=config.read_timeout_s)
        self._decoder: Decoder | None = None

    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in display order with strictly increasing `pts_ns`; raises `SourceError`."""
        try:
            stream = self._demuxer.open()
            self._decoder = self._make_decoder(stream, self.label)
            self.clock = FrameClock(self._demuxer.frame_rate, self._demuxer.index_clock)
            for demuxed, packets in self._demuxer.packets(annexb=self._decoder.wants_annexb):
                if demuxed is not None:
                    self._tap(demuxed)
                for packet in packets:
                    for frame in self._decoder.decode(packet):
                        yield self.clock.stamp(frame)
            for frame in self._decoder.flush():
                yield self.clock.stamp(frame)
        finally:
            self.close()

    def _tap(self, packet: av.Packet) -> None:
        if self._packet_tap is None:
            return
        try:
            self._packet_tap(self.config.id, packet)
        except Exception:  # noqa: BLE001 - a broken recorder must not stop detection
            self.tap_errors += 1
            if self.tap_errors == 1:
                log.exception("%s: packet tap failed; decoding continues (further failures only counted)", self.label)

    def close(self) -> None:
        """Free the decoder and the container; safe to call twice."""
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            decoder.close()
        self._demuxer.close()

