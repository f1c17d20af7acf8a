"""`PyAvReader`: one pass over a file or network stream, demuxed by PyAV, decoded by a pluggable decoder."""
from __future__ import annotations

import itertools
import logging
import time
from fractions import Fraction
from typing import Callable, Iterator

import av

from pipeline.config.models import StreamConfig
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.demux import Demuxer, Timing
from pipeline.masking import mask_url
from pipeline.sources.reader import DecodedFrame, Decoder
from pipeline.types import PTS_UNKNOWN, pts_to_ns

log = logging.getLogger(__name__)

PacketTap = Callable[[str, av.Packet], None]
DecoderFactory = Callable[[av.video.stream.VideoStream, str], Decoder]


class FrameClock:
    """Makes a pass's timestamps strictly increasing integer nanoseconds.

    timing "pts": the decoder's pts is kept; a missing pts continues from the previous frame by one
    frame period. "index" (raw streams, AVI): frame i is at `i / rate` seconds. "arrival" (live MJPEG,
    whose container has no timestamps): a frame is at the time it is stamped, on the host's monotonic
    clock from the pass's first frame, so the camera's own (often uneven) pace shows rather than a
    guessed rate. Any pts that does not increase is nudged 1 ns past the previous one; a missing pts
    made up and a nudged one are counted in `repaired`. now: the host clock for "arrival", in nanoseconds.
    """

    def __init__(self, rate: Fraction, timing: Timing = "pts", now: Callable[[], int] = time.monotonic_ns):
        self.rate = rate
        self.timing = timing
        self._now = now
        self.frame_ns = self._at(1)
        self.count = 0
        self.repaired = 0
        self._last: int | None = None
        self._first_arrival_ns: int | None = None

    def _at(self, index: int) -> int:
        return pts_to_ns(index, 1 / self.rate)

    def stamp(self, frame: DecodedFrame) -> DecodedFrame:
        pts = frame.pts_ns
        if self.timing == "index":
            pts = self._at(self.count)
        elif self.timing == "arrival":
            now = self._now()
            if self._first_arrival_ns is None:
                self._first_arrival_ns = now
            pts = now - self._first_arrival_ns
        elif pts == PTS_UNKNOWN:
            pts = 0 if self._last is None else self._last + self.frame_ns
            self.repaired += self._last is not None
        if self._last is not None and pts <= self._last:
            pts = self._last + 1
            self.repaired += 1
        frame.pts_ns = pts
        self._last = pts
        self.count += 1
        return frame


def cpu_decoder(stream: av.video.stream.VideoStream, label: str) -> Decoder:
    return CpuDecoder(stream, label, threads=1)


class DecoderShelf:
    """Keeps the decoder of a finished pass for the next pass over the same file (a looped file).

    Only decoders that say `reusable = True` after a full flush are kept (NVDEC: creating one is
    slow and serialised by the driver, ~3 s with 64 streams looping at once). The owner calls
    `close()` when the stream stops.
    """

    def __init__(self) -> None:
        self._decoder: Decoder | None = None
        self._key: tuple | None = None

    def take(self, key: tuple, make: Callable[[], Decoder]) -> Decoder:
        """The kept decoder when it was made for `key` (codec and picture size), else a new one."""
        if self._decoder is not None and self._key == key:
            decoder, self._decoder = self._decoder, None
            return decoder
        self.close()
        self._key = key
        return make()

    def keep(self, decoder: Decoder) -> bool:
        """Keep `decoder` (flushed) for the next pass; False when it cannot be reused."""
        if not decoder.reusable:
            return False
        self.close()
        self._decoder = decoder
        return True

    def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.close()


class PyAvReader:
    """Reads one stream once: `frames()` opens it, yields `DecodedFrame`s and returns at its end.

    packet_tap: called with `(stream_id, packet)` for every demuxed packet before decoding (clip
    recording); a tap that raises is logged and counted in `tap_errors`, never stops decoding.
    make_decoder: `(video_stream, label) -> Decoder`; the CPU decoder by default.
    shelf: where a looped file's decoder waits between passes (see `DecoderShelf`).
    """

    def __init__(self, config: StreamConfig, packet_tap: PacketTap | None = None,
                 make_decoder: DecoderFactory = cpu_decoder, shelf: DecoderShelf | None = None):
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
        self._shelf = shelf
        self._flushed = False

    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in display order with strictly increasing `pts_ns`; raises `SourceError`."""
        try:
            stream = self._demuxer.open()
            if self._shelf is not None:
                key = (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height)
                self._decoder = self._shelf.take(key, lambda: self._make_decoder(stream, self.label))
            else:
                self._decoder = self._make_decoder(stream, self.label)
            self.clock = FrameClock(self._demuxer.frame_rate, self._demuxer.timing(self.live))
            annexb = self._decoder.wants_annexb
            for demuxed in itertools.chain(self._demuxer.packets(), [None]):  # None: the end, flush the filter
                if demuxed is not None:
                    self._tap(demuxed)  # before the Annex-B filter, which takes the packet's data
                for packet in self._demuxer.for_decoder(demuxed, annexb):
                    for frame in self._decoder.decode(packet):
                        yield self.clock.stamp(frame)
            for frame in self._decoder.flush():
                yield self.clock.stamp(frame)
            self._flushed = True
        finally:
            self.close()

    def counters(self) -> dict[str, int]:
        return {"pts_repaired": self.clock.repaired if self.clock is not None else 0, "tap_errors": self.tap_errors}

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
        """Free the decoder (or shelve it after a whole pass) and the container; safe to call twice."""
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            if not (self._flushed and self._shelf is not None and self._shelf.keep(decoder)):
                decoder.close()
        self._demuxer.close()


def open_pyav(config: StreamConfig, make_decoder: DecoderFactory, packet_tap: PacketTap | None,
              shelf: DecoderShelf | None) -> PyAvReader:
    """The opener of the built-in source (`pipeline.plugins`): files and network streams through PyAV."""
    return PyAvReader(config, packet_tap=packet_tap, make_decoder=make_decoder, shelf=shelf)
