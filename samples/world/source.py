"""A live camera that needs no network or files: the embedded synthetic world, as a source plugin.

    plugins: [samples.world.source]      # in a config; registers the scheme below
    synthetic://plaza?seed=3&fps=15&size=1280x720[&frames=300][&realtime=0][&encode=1]

Frame `i` has `pts_ns = round(i * 1e9 / fps)`, so ground truth lines up by `round(pts_ns * fps / 1e9)`.
With `realtime=1` (default) frames are released on the wall clock like a camera; if rendering falls
behind by more than a frame, the late frames are skipped (a live camera does not wait), counted in
`skipped`. With `realtime=0` frames come as fast as they are asked for and the reader is not live.
With `encode=1` the reader behaves like an H.264 IP camera: each frame is encoded (libx264,
ultrafast, zero latency, a keyframe every 2 s), its packet goes to the packet tap (event clips),
and the pipeline gets the decoded frame, compression artefacts included.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from fractions import Fraction
from typing import Callable, Iterator

import av

from pipeline import plugins
from pipeline.errors import ConfigError
from pipeline.sources.reader import DecodedFrame
from pipeline.types import pts_to_ns
from samples.world.render import World
from samples.world.url import parse_synthetic_url

log = logging.getLogger(__name__)


class SyntheticReader:
    """Reader for `synthetic://` URLs; one pass starts at frame 0. Raises ConfigError for a bad URL."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic, stream_id: str = "synthetic",
                 packet_tap: Callable | None = None):
        try:
            self.spec = parse_synthetic_url(url)
        except ValueError as exc:
            raise ConfigError(f"synthetic stream: {exc}") from None
        self.url = url
        self.live = self.spec.realtime
        self.skipped = 0
        self._clock = clock
        self._stop = threading.Event()
        self._stream_id = stream_id
        self._packet_tap = packet_tap
        self._camera: _H264Camera | None = None

    def frames(self) -> Iterator[DecodedFrame]:
        """Yield frames until `frames=` is reached or `close()` is called. image: (H, W, 3) uint8 RGB."""
        spec = self.spec
        world = World(spec.scene, spec.seed, spec.size, spec.fps)
        camera = self._camera = _H264Camera(spec, self._stream_id, self._packet_tap) if spec.encode else None
        rate = Fraction(spec.fps).limit_denominator(1000)
        try:
            yield from self._render(world, camera, rate)
        finally:
            if camera is not None:
                camera.close()

    def _render(self, world, camera, rate: Fraction) -> Iterator[DecodedFrame]:
        spec = self.spec
        start = self._clock()
        index = 0
        while not self._stop.is_set() and (spec.frames is None or index < spec.frames):
            if spec.realtime:
                index = self._pace(start, index)
                if self._stop.is_set() or (spec.frames is not None and index >= spec.frames):
                    return
            image, _ = world.render(index)
            pts_ns = pts_to_ns(index, 1 / rate)
            if camera is not None:
                yield from camera.send(image, index, pts_ns)
            else:
                yield DecodedFrame(image, pts_ns, spec.size[0], spec.size[1])
            index += 1

    def _pace(self, start: float, index: int) -> int:
        """Wait until frame `index` is due; if more than one frame late, jump to the frame due now."""
        due = start + index / self.spec.fps
        now = self._clock()
        if now < due:
            self._stop.wait(due - now)
            return index
        current = int((now - start) * self.spec.fps)
        if current > index + 1:
            self.skipped += current - index
            return current
        return index

    def counters(self) -> dict[str, int]:
        return {"skipped_late": self.skipped, "tap_errors": self._camera.tap_errors if self._camera else 0}

    def close(self) -> None:
        """Stop `frames()` at the next frame boundary; safe from any thread, idempotent."""
        self._stop.set()


class _H264Camera:
    """Encodes rendered frames like an IP camera would and decodes them again (see `encode=1`)."""

    def __init__(self, spec, stream_id: str, packet_tap: Callable | None):
        self._holder = av.open(io.BytesIO(), "w", format="mpegts")  # in-band SPS/PPS, like RTSP
        fps = Fraction(spec.fps).limit_denominator(1000)
        self._stream = self._holder.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = spec.size
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = 1 / fps
        self._stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, round(2 * spec.fps)))}
        self._decoder = av.CodecContext.create("h264", "r")
        self._stream_id = stream_id
        self._tap = packet_tap
        self._time_base = 1 / fps
        self.tap_errors = 0

    def send(self, image, index: int, pts_ns: int) -> Iterator[DecodedFrame]:
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index, self._time_base
        for packet in self._stream.encode(frame):
            self._tap_packet(packet)
            for decoded in self._decoder.decode(packet):
                yield DecodedFrame(decoded, pts_ns, decoded.width, decoded.height, pixel_format="avframe")

    def _tap_packet(self, packet) -> None:
        if self._tap is None:
            return
        try:
            self._tap(self._stream_id, packet)
        except Exception:  # noqa: BLE001 - clips are a side channel; the camera keeps streaming
            self.tap_errors += 1
            if self.tap_errors == 1:
                log.exception("stream '%s': packet tap failed; clips may be missing", self._stream_id)

    def close(self) -> None:
        self._holder.close()


def open_synthetic(config, packet_tap: Callable | None) -> SyntheticReader:
    """The source's opener (`pipeline.plugins.SourceKind`): one pass over the stream's world."""
    return SyntheticReader(config.url, stream_id=config.id, packet_tap=packet_tap)


plugins.register_source(plugins.SourceKind(
    "synthetic", open_synthetic, live=lambda url: parse_synthetic_url(url).realtime,
    check=parse_synthetic_url, decodes=True,
))
