"""`PyAvReader`: one pass over a file or network stream, demuxed by PyAV, decoded by a pluggable decoder."""
from __future__ import annotations

import itertools
import logging
import time
from fractions import Fraction
from typing import Callable, Iterator

import av

from pipeline.config.models import StreamConfig
from pipeline.errors import CorruptPacket, SourceError
from pipeline.sources.clock import Arrivals, FrameClock
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.demux import Demuxer
from pipeline.masking import mask_url
from pipeline.sources.reader import DecodedFrame, Decoder
from pipeline.types import pts_to_ns

log = logging.getLogger(__name__)

PacketTap = Callable[[str, av.Packet], None]
DecoderFactory = Callable[[av.video.stream.VideoStream, str], Decoder]

NO_FRAME_PACKETS = 600
"""Video packets in a row that give no frame before a file (or an HLS stream) is given up on: about
20 s of video, more than a damaged stretch costs up to the next keyframe, far less than a whole file."""


class FrameWatch:
    """Ends a pass that goes too long without a frame, with `SourceError`.

    limit_s: for a live stream, its `read_timeout_s`: no frame for that long (the camera sends nothing, or
    nothing decodable; packets of its audio do not count) is checked at every packet read, while FFmpeg's
    own read timeout ends a read that gets no packet at all. Without it (files, read as fast as they
    decode; HLS, which arrives a segment at a time) the bound is `NO_FRAME_PACKETS` video packets.
    clock: monotonic seconds.
    """

    def __init__(self, label: str, limit_s: float | None, clock: Callable[[], float] = time.monotonic):
        self._label = label
        self._limit_s = limit_s
        self._clock = clock
        self._last_frame = clock()
        self._packets = 0

    def check(self) -> None:
        """At every packet read, of any stream."""
        if self._limit_s is not None and self._clock() - self._last_frame > self._limit_s:
            raise SourceError(f"{self._label}: read failed: no frame for {self._limit_s:g} s")

    def video_packet(self, corrupt: int) -> None:
        """At every video packet; `corrupt`: how many of the pass's packets could not be decoded so far."""
        self._packets += 1
        if self._limit_s is None and self._packets > NO_FRAME_PACKETS:
            raise SourceError(f"{self._label}: {NO_FRAME_PACKETS} packets in a row gave no frame ({corrupt} "
                              "undecodable in this pass); the stream has no decodable video here")

    def frame(self) -> None:
        self._last_frame = self._clock()
        self._packets = 0


ARRIVAL_TIME_BASE = Fraction(1, 1_000_000)
"""The time base of the packets of a stream timed by arrival, as the packet rings see them."""

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
    Damaged media does not end the pass: a packet the decoder (or the Annex-B filter) refuses is skipped
    and counted in `corrupt_packets`, like a frame the decoder could only conceal; only a stretch without
    any frame does (`FrameWatch`). A file that ends early (fewer packets than its index lists, or a last
    frame that is damaged) ends its pass with a warning.
    """

    def __init__(self, config: StreamConfig, packet_tap: PacketTap | None = None,
                 make_decoder: DecoderFactory = cpu_decoder, shelf: DecoderShelf | None = None):
        self.config = config
        self.live = config.is_live
        self.label = f"stream '{config.id}' ({mask_url(config.url)})"
        self.tap_errors = 0
        self.corrupt_packets = 0
        self.clock: FrameClock | None = None
        self._packet_tap = packet_tap
        self._make_decoder = make_decoder
        self._demuxer = Demuxer(config.url, self.label, transport=config.transport,
                                open_timeout_s=config.open_timeout_s, read_timeout_s=config.read_timeout_s)
        self._decoder: Decoder | None = None
        self._shelf = shelf
        self._flushed = False
        self._damaged_tail = False  # the last thing out of the decoder was a refusal or a damaged frame

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
            timed = self.live and not self._demuxer.is_hls
            watch = FrameWatch(self.label, self.config.read_timeout_s if timed else None)
            try:
                yield from self._stamped(watch)
            except SourceError:  # a live camera gone: a frame held for a leap is still the pass's last
                yield from self.clock.flush()
                raise
            yield from self.clock.flush()
            if not self.live:
                self._warn_if_cut_short()
            self._flushed = True
        finally:
            self.close()

    def _stamped(self, watch: FrameWatch) -> Iterator[DecodedFrame]:
        """The pass's frames, timed, as its packets come; a live stream's with the arrival of their packets."""
        annexb = self._decoder.wants_annexb
        arrivals = Arrivals() if self.live else None
        for demuxed in itertools.chain(self._demuxer.packets(watch.check), [None]):  # None: the end, flush
            if demuxed is not None:
                if arrivals is not None:
                    arrivals.read(None if demuxed.pts is None else pts_to_ns(demuxed.pts, demuxed.time_base))
                self._tap(demuxed)  # before the Annex-B filter, which takes the packet's data
                if self.clock.timing == "dts":
                    self.clock.demuxed(pts_to_ns(demuxed.dts, demuxed.time_base))
                watch.video_packet(self.corrupt_packets)
            for frame in self._decode(demuxed, annexb):
                watch.frame()
                if arrivals is not None:
                    frame.arrived_ns = arrivals.of(frame.pts_ns)
                yield from self.clock.stamp(frame)

    def _decode(self, demuxed: av.Packet | None, annexb: bool) -> list[DecodedFrame]:
        """The frames one demuxed packet completed (None: what the filter and the decoder still hold at the
        end); what is refused as corrupt is counted and skipped."""
        frames, refused = [], self.corrupt_packets
        for packet in self._skipping_corrupt(self._demuxer.for_decoder, demuxed, annexb):
            frames += self._skipping_corrupt(self._decoder.decode, packet)
        if demuxed is not None and self.corrupt_packets > refused:
            self.clock.refused()
        if demuxed is None:
            frames += self._skipping_corrupt(self._decoder.flush)
        for frame in frames:
            self.corrupt_packets += frame.damaged
            self._damaged_tail = frame.damaged
        return frames

    def _skipping_corrupt(self, step: Callable[..., list], *args) -> list:
        try:
            return step(*args)
        except CorruptPacket as exc:
            self.corrupt_packets += 1
            self._damaged_tail = True
            if self.corrupt_packets == 1:
                log.warning("%s; skipping it (further ones are only counted, in corrupt_packets)", exc)
            return []

    def _warn_if_cut_short(self) -> None:
        missing = self._demuxer.frames_missing
        if missing:
            log.warning("%s: ends %d frames before the end its index lists; the file looks truncated",
                        self.label, missing)
        elif self._damaged_tail:
            log.warning("%s: its last frame is damaged; the file looks truncated", self.label)
        if self.corrupt_packets:
            log.warning("%s: corrupt packets: %d (skipped, or decoded into damaged frames)",
                        self.label, self.corrupt_packets)

    def counters(self) -> dict[str, int]:
        return {"pts_repaired": self.clock.repaired if self.clock is not None else 0, "tap_errors": self.tap_errors,
                "corrupt_packets": self.corrupt_packets}

    def _tap(self, packet: av.Packet) -> None:
        if self._packet_tap is None:
            return
        if self.clock.timing != "arrival":
            self._tap_as(packet)
            return
        kept = packet.pts, packet.dts, packet.duration, packet.time_base
        try:  # its frames are timed by arrival: its clips' packets too, not by the demuxer's guessed rate (nor its
            packet.time_base, packet.pts = ARRIVAL_TIME_BASE, self.clock.arrived() // 1000  # guessed duration)
            packet.dts, packet.duration = packet.pts, None
            self._tap_as(packet)
        finally:  # the decoder gets the packet as demuxed
            packet.pts, packet.dts, packet.duration = kept[:3]
            if kept[3] is not None:
                packet.time_base = kept[3]

    def _tap_as(self, packet: av.Packet) -> None:
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
