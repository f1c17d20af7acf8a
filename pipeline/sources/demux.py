"""Opening files and network streams (RTSP, HTTP: HLS, MJPEG, MPEG-TS) with PyAV and pulling their
video packets."""
from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Literal
from urllib.parse import urlsplit

import av
from av.bitstream import BitStreamFilterContext

from pipeline.errors import CorruptPacket, SourceError, SourceRefused
from pipeline.masking import mask_url
from pipeline.plugins import local_path

RAW_FORMATS = {".h264": "h264", ".264": "h264", ".h265": "hevc", ".265": "hevc", ".hevc": "hevc"}
"""Elementary streams have no container, so PyAV needs the format named."""

INDEX_CLOCK_FORMATS = frozenset({"h264", "hevc"})
"""Containers without frame timestamps (raw streams): their frames are timed by index and frame rate instead."""

DTS_CLOCK_FORMATS = frozenset({"avi"})
"""Containers whose pts are scrambled by packed B-frames but whose dts number the frames, dropped ones counted (AVI
keeps them as empty chunks, which FFmpeg does not return as packets): their frames are timed by their packets' dts."""

UNTIMED_FORMATS = frozenset({"mpjpeg"})
"""Containers that carry no timestamps at all (MJPEG over HTTP, multipart/x-mixed-replace): FFmpeg numbers
their frames at a guessed 25 fps, so a live one is timed by when its frames arrive instead."""

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_RATE = Fraction(25)

HLS_STALLED_RELOADS = 6
"""Reloads of a live HLS playlist that brings no new segment before the pass ends (and a live stream
reconnects). FFmpeg reloads an unchanged playlist every half target duration: about 3 segments' time."""

Timing = Literal["pts", "index", "dts", "arrival"]


def is_hls(url: str) -> bool:
    """An HLS playlist over http(s) (a `.m3u8` path): it arrives a segment at a time."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.path.lower().endswith(".m3u8")


def lower_scheme(url: str) -> str:
    """`url` with its scheme in lower case: schemes are case-insensitive (RFC 3986), and the config takes
    `RTSP://` as rtsp, but FFmpeg knows its protocols in lower case only ("Protocol not found")."""
    scheme = urlsplit(url).scheme  # lower case already
    return scheme + url[len(scheme):] if len(scheme) > 1 else url


def describe_error(exc: BaseException, url: str) -> str:
    """A one-line reason from a PyAV/OS error with `url` masked (FFmpeg errors quote the filename)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_url(str(reason).replace(url, mask_url(url)))


def refusal(exc: BaseException, url: str) -> str | None:
    """What an RTSP/HTTP server's 4xx answer means for this `url`, and what to fix; None for other errors."""
    has_credentials = "@" in urlsplit(url).netloc
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        if has_credentials:
            return "unauthorised (401): the server refused the url's user and password; correct them in the url"
        return "unauthorised (401): the server wants a user and password; put them in the url (scheme://user:password@host/...)"
    if isinstance(exc, av.error.HTTPForbiddenError):
        return "forbidden (403): the server refuses this user the stream; check the user's rights on the camera"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "not found (404): the server has no stream at this path; check the url's path (the camera's stream name)"
    if isinstance(exc, av.error.HTTPClientError):
        return f"refused: {describe_error(exc, url)}; check the url"
    return None


class Demuxer:
    """The video packets of one file or network stream.

    transport: RTSP lower transport ("tcp" is reliable through NAT and firewalls; "udp" has less
    latency but loses packets on a busy network). open_timeout_s / read_timeout_s bound a server
    that accepts and then stalls. RTSP opens with little probing (~0.1 s instead of ~2-3 s).
    An HLS playlist (a `.m3u8` path) arrives a segment at a time, so one read may rightly wait a whole
    segment (2-10 s): there `read_timeout_s` bounds each HTTP request instead (FFmpeg's `rw_timeout`),
    and a playlist that stops growing ends the pass (`HLS_STALLED_RELOADS`). FFmpeg's own HTTP
    `reconnect*` options stay off: the worker reconnects, with backoff, and counts it.
    """

    def __init__(self, url: str, label: str, *, transport: str = "tcp", open_timeout_s: float = 5.0,
                 read_timeout_s: float = 5.0):
        self.url = lower_scheme(url)
        if url.startswith("~") and local_path(url) is not None:  # a file in a home folder, as every path in a config
            self.url = os.path.expanduser(url)  # (FFmpeg would look for a folder named '~')
        self.label = label
        self._transport = transport
        self._timeout = (open_timeout_s, read_timeout_s)
        self._container: av.container.InputContainer | None = None
        self._bsf: BitStreamFilterContext | bool | None = None  # None: not asked yet; False: none needed
        self.stream: av.video.stream.VideoStream | None = None
        self.packets_read = 0
        """Video packets demuxed so far (empty ones too)."""
        self.last_dts: int | None = None
        """The dts of the last video packet demuxed, in the stream's time base."""

    @property
    def is_network(self) -> bool:
        return self.url.startswith(NETWORK_SCHEMES)

    def open(self) -> av.video.stream.VideoStream:
        """Open the container and pick its first video stream; raises `SourceError`."""
        kwargs: dict = {"timeout": self._timeout}
        if self.url.startswith(("rtsp://", "rtsps://")):
            # the SDP already describes the stream, so probing only delays the first frame (~3 s -> ~0.1 s)
            kwargs["options"] = {"rtsp_transport": self._transport, "analyzeduration": "0", "probesize": "32768"}
        elif self.is_hls:
            open_timeout_s, read_timeout_s = self._timeout
            kwargs["timeout"] = (open_timeout_s, None)
            kwargs["options"] = {"rw_timeout": str(round(read_timeout_s * 1e6)),
                                 "m3u8_hold_counters": str(HLS_STALLED_RELOADS)}
        elif not self.is_network:
            fmt = RAW_FORMATS.get(Path(self.url).suffix.lower())
            if fmt:
                kwargs["format"] = fmt
        started = time.monotonic()
        try:
            self._container = av.open(self.url, **kwargs)
        except av.error.HTTPClientError as exc:
            raise SourceRefused(f"{self.label}: cannot open: {refusal(exc, self.url)}") from exc
        except (av.error.FFmpegError, OSError) as exc:
            # an RTSP open cut off by the timeout says "Invalid data"; a slow failure of another kind says its own
            cut_off = (isinstance(exc, av.error.InvalidDataError) and self.url.startswith(("rtsp://", "rtsps://"))
                       and time.monotonic() - started >= self._timeout[0])
            if isinstance(exc, av.error.ExitError) or cut_off:
                raise SourceError(f"{self.label}: cannot open: no answer within {self._timeout[0]:g} s") from exc
            raise SourceError(f"{self.label}: cannot open: {describe_error(exc, self.url)}") from exc
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"{self.label}: has no video stream; point the url at a video")
        self.stream = self._container.streams.video[0]
        return self.stream

    @property
    def format_name(self) -> str:
        return self._container.format.name.split(",")[0] if self._container else ""

    @property
    def frame_rate(self) -> Fraction:
        """The nominal frame rate in frames per second (25 when the stream does not say)."""
        s = self.stream
        for rate in (s.guessed_rate, s.average_rate, s.base_rate):
            if rate and 0 < rate <= 1000:
                return Fraction(rate)
        return DEFAULT_RATE

    @property
    def is_hls(self) -> bool:
        return is_hls(self.url)

    def timing(self, live: bool) -> Timing:
        """How frames are timed (`clock.FrameClock`): "index" (by index and frame rate) for containers
        without timestamps, "dts" for those whose dts are their only usable ones, "arrival" for a live stream
        without any, else "pts"."""
        if self.format_name in INDEX_CLOCK_FORMATS:
            return "index"
        if self.format_name in DTS_CLOCK_FORMATS:
            return "dts"
        return "arrival" if live and self.format_name in UNTIMED_FORMATS else "pts"

    @property
    def frames_missing(self) -> int:
        """Frames the container's index lists beyond the packets read (0 without an index, like raw or
        MPEG-TS): after the end, more than 0 means the file was cut short. Where the dts number the frames, the
        last one read says how far the file went (the frames dropped on the way are no packets)."""
        if self.stream is None:
            return 0
        read = self.packets_read
        if self.format_name in DTS_CLOCK_FORMATS and self.last_dts is not None:
            read = self.last_dts + 1
        return max(0, self.stream.frames - read)

    def packets(self, each: Callable[[], None] | None = None) -> Iterator[av.Packet]:
        """The non-empty video packets in decode order, as the container holds them (what a recorder
        wants); `for_decoder` turns each into what the decoder takes. Raises `SourceError`.
        each: called at every packet read, of any stream (a camera's audio too), before it is yielded; it
        may raise `SourceError` to end the pass (`pyav.FrameWatch`)."""
        try:
            for packet in self._container.demux():
                if each is not None:
                    each()
                if packet.stream is not self.stream or (not packet.size and packet.dts is None):
                    continue  # another stream, or PyAV's end-of-stream marker
                self.packets_read += 1
                self.last_dts = packet.dts
                if packet.size:
                    yield packet
        except av.error.ExitError as exc:
            raise SourceError(f"{self.label}: read failed: nothing received for {self._timeout[1]:g} s") from exc
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.label}: read failed: {describe_error(exc, self.url)}") from exc

    def for_decoder(self, packet: av.Packet | None, annexb: bool) -> list[av.Packet]:
        """`packet` as the decoder takes it: Annex-B H.264/HEVC when `annexb` (MP4/MKV keep their parameter
        sets apart; the filter puts them in-band). None flushes the filter at the end. The filter takes
        the packet's data, so call this after anything that needs the packet as demuxed. A packet the
        filter refuses (damaged: its NAL lengths run past its end) raises `CorruptPacket`."""
        if annexb and self._bsf is None:
            self._bsf = self._annexb_filter() or False
        if not self._bsf:
            return [packet] if packet is not None else []
        try:
            return self._bsf.filter(packet)
        except (av.error.FFmpegError, OSError) as exc:
            reason = describe_error(exc, self.url)
            raise CorruptPacket(f"{self.label}: cannot convert a packet to Annex-B: {reason}") from exc

    def _annexb_filter(self) -> BitStreamFilterContext | None:
        # MP4/MKV keep parameter sets in avcC/hvcC extradata (first byte 1); Annex-B sources need no filter.
        name = self.stream.codec_context.name
        extradata = self.stream.codec_context.extradata or b""
        if name not in ("h264", "hevc") or not extradata or extradata[0] != 1:
            return None
        return BitStreamFilterContext(f"{name}_mp4toannexb", self.stream)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
