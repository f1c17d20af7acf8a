"""How fast a live RTSP camera comes back, against a real RTSP server (gst-rtsp-server, as the tests use):

    python benchmarks/recovery.py --out OUT_DIR [--outages 2 5 10 30] [--repeats 3] [--read-timeouts 1 2 5]

- outage: the server is killed (its connections cut, its port refusing) for `outage` seconds, then started
  again; recovery is from the moment it accepts connections again to the first frame the worker hands on.
- hang: the server is frozen (SIGSTOP: connections stay open, nothing more is sent) for `hang_s` seconds;
  detection is from the freeze to the moment the worker gives the connection up (its first reconnect),
  recovery from the thaw to the first frame after it.

One stream, CPU decode, the config's defaults except the read timeout (and an open timeout equal to it).
Writes OUT_DIR/recovery.json and OUT_DIR/recovery.md; needs ../shared/media/dog-848x464.mp4.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.models import StreamConfig  # noqa: E402
from pipeline.sources.worker import StreamWorker  # noqa: E402
from tests.support.collecting_sink import CollectingSink  # noqa: E402
from tests.support.http_server import free_port  # noqa: E402
from tests.support.rtsp_server import RtspServer, concat_clip  # noqa: E402

CLIP = REPO.parent / "shared" / "media" / "dog-848x464.mp4"
WAIT_S = 60.0
"""Longest wait for any frame; a run that waits longer is reported as failed."""


class Reconnects(logging.Handler):
    """Wall times (ns) of the worker's reconnect warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.times: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.times.append(int(record.created * 1e9))


def started_worker(server: RtspServer, read_timeout_s: float) -> tuple[StreamWorker, CollectingSink]:
    sink = CollectingSink()
    config = StreamConfig(id="cam", url=server.url, decode="cpu", read_timeout_s=read_timeout_s,
                          open_timeout_s=read_timeout_s)
    worker = StreamWorker(config, sink)
    worker.start()
    if not sink.wait_for(10, WAIT_S):
        raise RuntimeError(f"no frames from {server.url}: {worker.stats()}")
    return worker, sink


def outage(server: RtspServer, outage_s: float, read_timeout_s: float) -> dict:
    worker, sink = started_worker(server, read_timeout_s)
    try:
        server.kill()
        time.sleep(outage_s)  # the fault's length, not a synchronisation
        server.start()
        accepting_ns = time.time_ns()
        before = len(sink.frames)
        back = sink.wait_for(before + 1, WAIT_S)
        recovery_s = (sink.frames[before].wall_ns - accepting_ns) / 1e9 if back else None
        return {"outage_s": outage_s, "recovery_s": recovery_s, "reconnects": worker.stats()["reconnects"]}
    finally:
        worker.stop()
        worker.join(10)


def hang(server: RtspServer, hang_s: float, read_timeout_s: float, reconnects: Reconnects) -> dict:
    worker, sink = started_worker(server, read_timeout_s)
    reconnects.times.clear()
    try:
        server.freeze()
        frozen_ns = time.time_ns()
        time.sleep(hang_s)  # the fault's length, not a synchronisation
        server.thaw()
        thawed_ns = time.time_ns()
        before = len(sink.frames)
        back = sink.wait_for(before + 1, WAIT_S)
        given_up = [t for t in reconnects.times if t > frozen_ns]
        return {"read_timeout_s": read_timeout_s, "hang_s": hang_s,
                "detection_s": (given_up[0] - frozen_ns) / 1e9 if given_up else None,
                "recovery_s": (sink.frames[before].wall_ns - thawed_ns) / 1e9 if back else None}
    finally:
        server.thaw()
        worker.stop()
        worker.join(10)


def machine() -> str:
    """The CPU model and the cores this process may use (no host name)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{models[0] if models else platform.machine()}, {len(os.sched_getaffinity(0))} cores"


def summary(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return "failed"
    failed = f", {len(values) - len(done)} failed" if len(done) < len(values) else ""
    return f"{statistics.median(done):.2f} (max {max(done):.2f}{failed})"


def markdown(result: dict) -> str:
    defaults = StreamConfig(id="x", url="rtsp://x/y")
    lines = [f"Recovery of one RTSP camera, {result['date']}, {result['machine']} "
             f"(reconnect_min_s {defaults.reconnect_min_s}, reconnect_max_s {defaults.reconnect_max_s}; "
             f"median of {result['repeats']}, max in brackets)", "",
             "| server killed for | frames again after it accepts connections (s) |", "| --- | --- |"]
    for outage_s in result["outages"]:
        runs = [r["recovery_s"] for r in result["outage"] if r["outage_s"] == outage_s]
        lines.append(f"| {outage_s:g} s | {summary(runs)} |")
    lines += ["", "| read_timeout_s | hung server given up after it hung (s) | frames again after it answers (s) |",
              "| --- | --- | --- |"]
    for read_timeout_s in result["read_timeouts"]:
        runs = [r for r in result["hang"] if r["read_timeout_s"] == read_timeout_s]
        lines.append(f"| {read_timeout_s:g} | {summary([r['detection_s'] for r in runs])} | "
                     f"{summary([r['recovery_s'] for r in runs])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--outages", type=float, nargs="+", default=[2, 5, 10, 30])
    parser.add_argument("--read-timeouts", type=float, nargs="+", default=[1, 2, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-timeout-s", type=float, default=5.0, help="read timeout during the outages")
    args = parser.parse_args()
    reconnects = Reconnects()
    logging.getLogger("pipeline.sources.worker").addHandler(reconnects)
    with tempfile.TemporaryDirectory() as tmp:
        server = RtspServer(concat_clip(CLIP, Path(tmp) / "clip.mp4", copies=20), free_port()).start()
        try:
            outages = [outage(server, s, args.read_timeout_s) for s in args.outages for _ in range(args.repeats)]
            hangs = [hang(server, 2 * rt + 2, rt, reconnects) for rt in args.read_timeouts for _ in range(args.repeats)]
        finally:
            server.kill()
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "repeats": args.repeats,
              "outages": args.outages, "read_timeouts": args.read_timeouts, "outage": outages, "hang": hangs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recovery.json").write_text(json.dumps(result, indent=2))
    (args.out / "recovery.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
