"""A real RTSP server for source tests: GStreamer's gst-rtsp-server serving an H.264 MP4 (no re-encode).

gst-rtsp-server's Python bindings import only in Debian's /usr/bin/python3, so this file is both
- a script for that interpreter: `/usr/bin/python3 rtsp_server.py --port P --mount NAME=FILE.mp4
  [--credentials USER:PASSWORD]`,
  which serves `rtsp://127.0.0.1:P/NAME` (TCP and UDP) and prints `READY <port>` once listening; and
- the test-side `RtspServer`, which runs the script as a subprocess, waits for READY and kills it.

Each client gets its own pipeline from the start of the file (an unshared factory), so one client's
`Range: npt=0-` never rewinds another. Files are played once: loop them by concatenating first
(`concat_clip`), because looping inside the server by segment seeks deadlocks after a few clients.
The `rtsp_server` and `rtsp_server_factory` fixtures (tests/integration/sources/conftest.py) skip when the
bindings are missing.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
_PROBE = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
LAUNCH = "( filesrc location=\"{path}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"


# ---- the server, run by /usr/bin/python3 ----------------------------------------------------------
def serve(port: int, mounts: list[tuple[str, str]], credentials: tuple[str, str] | None = None) -> None:
    import gi  # noqa: PLC0415 - only Debian's python has it

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # noqa: PLC0415

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    permissions = _require(credentials, server, GstRtspServer) if credentials else None
    for name, path in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(LAUNCH.format(path=path))
        factory.set_shared(False)
        if permissions is not None:
            factory.set_permissions(permissions)
        server.get_mount_points().add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"FAILED cannot listen on 127.0.0.1:{port}", flush=True)
        sys.exit(1)
    print(f"READY {server.get_bound_port()}", flush=True)
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    GLib.MainLoop().run()


def _require(credentials: tuple[str, str], server, rtsp):
    """Basic auth on `server`: a client without these credentials gets 401 Unauthorized. Returns the
    permissions a mount needs so that only the authenticated role may play it."""
    auth = rtsp.RTSPAuth()
    token = rtsp.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth.add_basic(rtsp.RTSPAuth.make_basic(*credentials), token)
    server.set_auth(auth)
    permissions = rtsp.RTSPPermissions()
    permissions.add_permission_for_role("viewer", "media.factory.access", True)
    permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    return permissions


def _exit_when_parent_goes() -> None:
    # the test holds our stdin open; EOF means it exited (even by SIGKILL), so no server outlives it
    sys.stdin.read()
    os._exit(0)


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="serve H.264 MP4 files over RTSP")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", action="append", required=True, help="NAME=PATH (repeatable)")
    parser.add_argument("--credentials", help="USER:PASSWORD: require basic auth (401 without them)")
    args = parser.parse_args(argv)
    credentials = tuple(args.credentials.split(":", 1)) if args.credentials else None
    serve(args.port, [tuple(m.split("=", 1)) for m in args.mount], credentials)


# ---- the test side, run by the project's python ---------------------------------------------------
_available: tuple[bool, str] | None = None


def gst_rtsp_available() -> tuple[bool, str]:
    """(True, "") when /usr/bin/python3 can import GstRtspServer, else (False, why)."""
    global _available
    if _available is None:
        if not Path(SYSTEM_PYTHON).exists():
            _available = (False, f"{SYSTEM_PYTHON} is absent")
        else:
            probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30)
            last_line = (probe.stderr.strip().splitlines() or [""])[-1]
            _available = (probe.returncode == 0, last_line)
        if not _available[0]:
            _available = (False, f"gst-rtsp-server is not importable by {SYSTEM_PYTHON} ({_available[1]}); "
                                 "run scripts/setup.sh --test to install python3-gi and gir1.2-gst-rtsp-server-1.0")
    return _available


class RtspServer:
    """One gst-rtsp-server process serving `media` at `rtsp://127.0.0.1:<port>/<name>`.

    `kill()` ends it abruptly (like a crashed camera); `start()` again brings it back on the same port.
    `freeze()` hangs it (SIGSTOP: connections stay open, nothing is sent or answered); `thaw()` resumes it.
    credentials: (user, password) the server requires (basic auth); a client without them gets 401.
    """

    def __init__(self, media: Path, port: int, name: str = "live", credentials: tuple[str, str] | None = None):
        self.media = Path(media)
        self.port = port
        self.name = name
        self.credentials = credentials
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.name}"

    def start(self, timeout: float = 10.0) -> "RtspServer":
        """Start the server and return once it listens; raises RuntimeError if it does not."""
        deadline = time.monotonic() + timeout
        while True:  # a just-killed server's port can linger for a moment
            auth = ["--credentials", ":".join(self.credentials)] if self.credentials else []
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--mount", f"{self.name}={self.media}", *auth],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            line = _read_line(self._proc, max(0.1, deadline - time.monotonic()))
            if line.startswith("READY"):
                return self
            self.kill()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server on port {self.port} did not start: {line!r}")
            time.sleep(0.2)

    def freeze(self) -> None:
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """End the server at once (SIGKILL) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait(timeout=10)
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                pipe.close()
            self._proc = None


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of `proc`, or its stderr tail if it exits or stays silent for `timeout`."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if box and box[0]:
        return box[0].strip()
    if proc.poll() is not None:
        return f"exited {proc.returncode}: {proc.stderr.read().strip()[-500:]}"
    return f"no READY within {timeout:.1f} s"


def concat_clip(source: Path, target: Path, copies: int) -> Path:
    """Write `copies` back-to-back copies of `source`'s video into MP4 `target` (a remux, no re-encode)."""
    import av  # noqa: PLC0415 - the project's python only

    with av.open(str(source)) as probe:
        packets = [p for p in probe.demux(probe.streams.video[0]) if p.size]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.dts for p in packets)
    with av.open(str(target), "w") as dst:
        out_stream = None
        for copy in range(copies):
            with av.open(str(source)) as src:  # fresh packets: muxing rescales a packet's times in place
                in_stream = src.streams.video[0]
                out_stream = out_stream or dst.add_stream_from_template(in_stream)
                for p in src.demux(in_stream):
                    if not p.size:
                        continue
                    p.pts += copy * span
                    p.dts += copy * span
                    p.stream = out_stream
                    dst.mux(p)
    return target

if __name__ == "__main__":
    _main(sys.argv[1:])
