"""A local HTTP camera for source tests: one clip, made with PyAV, served the ways HTTP cameras send video,
each at the clip's own pace (a camera, not a file server).

    media = make_media(tmp_dir)          # 160x96 H.264 at 25 fps, as 1-s MPEG-TS segments, and JPEG frames
    camera = HttpCamera(media).start()
    camera.url("video.mjpg")   # MJPEG: multipart/x-mixed-replace JPEGs, endless
    camera.url("stream.ts")    # MPEG-TS: the segments back to back, one pass
    camera.url("live.m3u8")    # HLS: a live playlist of the last 3 segments published so far
    camera.url("clip.ts")      # the same MPEG-TS as a file (Content-Length, all at once)
    camera.stop(); camera.start()  # an outage: open connections are cut, the port refuses, then it serves again
    camera.freeze(); camera.thaw()  # a hung camera: connections stay open, nothing new is sent or published

`credentials=(user, password)` asks for HTTP basic auth; `tls=(certfile, keyfile)` serves https.
"""
from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np

from tests.support.http_server import free_port

FPS = 25
SIZE = (160, 96)
WINDOW = 3
"""Segments a live HLS playlist lists (the newest ones)."""


@dataclass(frozen=True)
class Media:
    segments: list[bytes]  # MPEG-TS, one keyframe-led second each; back to back they are one stream
    jpegs: list[bytes]
    fps: int = FPS
    segment_s: float = 1.0


def make_media(directory: Path, seconds: int = 30, jpeg_frames: int = 50) -> Media:
    """Encode a square moving over a dark picture: H.264 segments through PyAV's HLS muxer, and JPEGs."""
    directory.mkdir(parents=True, exist_ok=True)
    options = {"hls_time": "1", "hls_list_size": "0", "hls_segment_filename": str(directory / "seg%03d.ts")}
    with av.open(str(directory / "index.m3u8"), "w", format="hls", options=options) as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "tune": "zerolatency"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.gop_size = FPS  # a keyframe starts every 1-s segment
        for i in range(seconds * FPS):
            for packet in stream.encode(_picture(i)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    segments = [path.read_bytes() for path in sorted(directory.glob("seg*.ts"))]
    jpeg = av.CodecContext.create("mjpeg", "w")
    jpeg.width, jpeg.height, jpeg.pix_fmt, jpeg.time_base = *SIZE, "yuvj420p", Fraction(1, FPS)
    jpegs = [bytes(packet) for i in range(jpeg_frames)
             for packet in jpeg.encode(_picture(i).reformat(format="yuvj420p"))]
    return Media(segments, jpegs)


def _picture(i: int) -> av.VideoFrame:
    image = np.full((SIZE[1], SIZE[0], 3), 30, np.uint8)
    x = (4 * i) % (SIZE[0] - 24)
    image[36:60, x:x + 24] = 230
    return av.VideoFrame.from_ndarray(image, format="rgb24")


class HttpCamera:
    """Serves `media` on 127.0.0.1 (the same port across `stop()`/`start()`); see the module docstring."""

    def __init__(self, media: Media, credentials: tuple[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None):
        self.media = media
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self._auth = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None
        self._userinfo = ":".join(credentials) + "@" if credentials else ""
        self._tls = tls
        self._started: float | None = None  # the camera's clock starts once and goes on across outages
        self._frozen_at: float | None = None
        self._frozen_s = 0.0
        self._stopped = False
        self._connections: set[socket.socket] = set()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self._userinfo}127.0.0.1:{self.port}/{path}"

    def start(self) -> "HttpCamera":
        with self._cond:
            self._stopped = False
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        if self._tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self._tls))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._started = self._started or time.monotonic()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"camera:{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (a camera that lost power)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._cond:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its client

    def freeze(self) -> None:
        with self._cond:
            self._frozen_at = time.monotonic()

    def thaw(self) -> None:
        with self._cond:
            self._frozen_s += time.monotonic() - self._frozen_at
            self._frozen_at = None
            self._cond.notify_all()

    def clock(self) -> float:
        """Seconds the camera has been running: from its first start, without the time it was frozen."""
        return (self._frozen_at or time.monotonic()) - self._started - self._frozen_s

    def published(self) -> int:
        """How many HLS segments exist by now: one more every `segment_s` of the camera's clock."""
        return min(int(self.clock() / self.media.segment_s) + 1, len(self.media.segments))

    def playlist(self) -> bytes:
        newest = self.published()
        first = max(0, newest - WINDOW)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{round(self.media.segment_s)}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for k in range(first, newest):
            lines += [f"#EXTINF:{self.media.segment_s:.3f},", f"seg{k:03d}.ts"]
        return ("\n".join(lines) + "\n").encode()

    def authorized(self, header: str | None) -> bool:
        return self._auth is None or header == self._auth

    def wait_until(self, due: float) -> bool:
        """Block until the camera's clock reaches `due` (and it is not frozen); False once it is stopped."""
        with self._cond:
            while not self._stopped:
                if self._frozen_at is None and self.clock() >= due:
                    return True
                self._cond.wait(None if self._frozen_at is not None else due - self.clock())
            return False

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._cond:
            (self._connections.add if open_ else self._connections.discard)(connection)


def _handler(camera: HttpCamera):
    media = camera.media

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server naming
            if not camera.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            camera.track(self.connection, True)
            try:
                self._serve(self.path.lstrip("/"))
            except OSError:
                pass  # the client went away, or stop() cut the connection
            finally:
                camera.track(self.connection, False)

        def _serve(self, path: str) -> None:
            if path == "video.mjpg":
                self._head("multipart/x-mixed-replace;boundary=frame")
                start, i = camera.clock(), 0
                while camera.wait_until(start + i / media.fps):
                    jpeg = media.jpegs[i % len(media.jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(jpeg), jpeg))
                    i += 1
            elif path == "stream.ts":
                self._head("video/mp2t")
                start = camera.clock()
                for k, segment in enumerate(media.segments):
                    step = len(segment) // media.fps + 1
                    for j, offset in enumerate(range(0, len(segment), step)):
                        if not camera.wait_until(start + (k + j / media.fps) * media.segment_s):
                            return
                        self.wfile.write(segment[offset:offset + step])
            elif path == "clip.ts":
                self._whole("video/mp2t", b"".join(media.segments))
            elif path == "live.m3u8":
                self._whole("application/vnd.apple.mpegurl", camera.playlist())
            elif path.startswith("seg") and path.endswith(".ts") and int(path[3:-3]) < camera.published():
                self._whole("video/mp2t", media.segments[int(path[3:-3])])
            else:
                self.send_error(404)

        def _head(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()

        def _whole(self, content_type: str, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler
