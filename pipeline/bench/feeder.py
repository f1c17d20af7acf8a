"""Paced cameras over HTTP on loopback, for machines without an RTSP server: every GET of `/<name>.ts` is one
camera, streaming the clip as MPEG-TS from its start, looped, each packet sent at its moment, as a camera
sends them. The pipeline and any other reader (FFmpeg, OpenCV) read the same cameras this way.

Timestamps carry the send time: a packet's dts is the moment it is sent, in 90 kHz units since the
feeder's `epoch_ns` (its pts keeps the clip's pts - dts offset), so a reader that knows `epoch_ns` has each
frame's capture time as `epoch_ns + pts` whatever its own decoding and buffering did.
"""
from __future__ import annotations

import http.server
import logging
import socketserver
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

from pipeline.errors import SourceError

log = logging.getLogger(__name__)

TS_TIME_BASE = Fraction(1, 90_000)


class PacedFeeder:
    """Serves `clip` (an H.264/HEVC file) as paced live MPEG-TS on `host`, a free port unless `port` is given.
    `sent(name)`: frames sent so far to the camera of that name (all its connections together)."""

    def __init__(self, clip: Path, host: str = "127.0.0.1", port: int = 0):
        self.clip = Path(clip)
        self._period_ns = frame_period_ns(self.clip)
        self.epoch_ns = time.time_ns()
        self._epoch_mono = time.monotonic_ns()
        self._sent: dict[str, int] = {}
        self._starts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        feeder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                name = self.path.strip("/").removesuffix(".ts").removesuffix(".start")
                start = feeder.start_ns(name) if self.path.endswith(".start") else None
                if start is not None:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(str(start).encode())
                    return
                if not self.path.endswith(".ts") or not name:
                    self.send_error(404, "ask for /<camera>.ts (or /<camera>.start once it streams)")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                feeder._stream(name, self.wfile)

            def log_message(self, *args) -> None:
                pass

        self._server = socketserver.ThreadingTCPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="feeder", daemon=True)

    def start(self) -> PacedFeeder:
        self._thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}.ts"

    def sent(self, name: str) -> int:
        with self._lock:
            return self._sent.get(name, 0)

    def start_ns(self, name: str) -> int | None:
        """The pts (in ns) of the first frame of the camera's latest connection: its stream's start time, which
        readers that report positions from the start (OpenCV's CAP_PROP_POS_MSEC) subtract. Served as
        `/<name>.start`."""
        with self._lock:
            return self._starts.get(name)

    def capture_ns(self, pts: int, time_base: Fraction) -> int:
        """A frame's capture (send) time on the wall clock, from its pts as a reader sees it."""
        return self.epoch_ns + round(pts * time_base * 1_000_000_000)

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _stream(self, name: str, sink) -> None:
        """Send the clip to one reader until it hangs up or the feeder closes."""
        try:
            with av.open(sink, "w", format="mpegts", options={"max_delay": "0", "flush_packets": "1", "omit_video_pes_length": "0"}) as out:
                self._loop(name, out)
        except (BrokenPipeError, ConnectionResetError, av.error.FFmpegError, ValueError) as exc:
            log.debug("camera %s: reader gone (%s)", name, exc)

    def _loop(self, name: str, out) -> None:
        stream, next_ns, first = None, time.monotonic_ns(), True
        while not self._stop.is_set():
            with av.open(str(self.clip)) as src:
                video = src.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(video)
                    stream.time_base = TS_TIME_BASE
                for packet in src.demux(video):
                    if packet.dts is None or not packet.size:
                        continue
                    period_ns = round((packet.duration or 0) * video.time_base * 1_000_000_000) or self._period_ns
                    now = time.monotonic_ns()
                    if next_ns > now and self._stop.wait((next_ns - now) / 1e9):
                        return
                    # the packet's moment is on the camera's clock: a wake-up a little late does not move it,
                    # but a reader more than a frame behind gets its packets stamped when they go
                    moment = next_ns if now - next_ns < period_ns else now
                    next_ns = moment + period_ns
                    pts_ns = self._mux(out, stream, packet, video.time_base, moment)
                    with self._lock:
                        if first:
                            self._starts[name], first = pts_ns, False
                        self._sent[name] = self._sent.get(name, 0) + 1

    def _mux(self, out, stream, packet, time_base: Fraction, moment_ns: int) -> int:
        """Stamp the packet with its send moment (dts; pts keeps the clip's offset from dts) and send it; its
        pts in ns."""
        offset = (packet.pts - packet.dts) * time_base if packet.pts is not None else 0
        dts = round(Fraction(moment_ns - self._epoch_mono, 1_000_000_000) / TS_TIME_BASE)
        packet.dts, packet.pts = dts, dts + round(offset / TS_TIME_BASE)
        packet.time_base, packet.stream = TS_TIME_BASE, stream
        out.mux(packet)
        return round(packet.pts * TS_TIME_BASE * 1_000_000_000)


def frame_period_ns(clip: Path) -> int:
    """How long after a packet that carries no duration (MPEG-TS, FLV) the next one is sent: one frame period at the
    clip's average frame rate, else its first packet's duration. SourceError naming the clip when neither is known
    (pacing at a guessed rate would play it faster or slower than it was recorded)."""
    with av.open(str(clip)) as src:
        video = src.streams.video[0]
        if video.average_rate:
            return round(Fraction(1_000_000_000) / video.average_rate)
        first = next((p for p in src.demux(video) if p.dts is not None and p.size), None)
        if first is not None and first.duration:
            return round(first.duration * video.time_base * 1_000_000_000)
    raise SourceError(f"{clip}: cannot pace it: its video states no frame rate and its packets carry no duration; "
                      "re-encode it at a constant rate (e.g. ffmpeg -i IN -r 30 -c:v libx264 OUT.mp4)")
