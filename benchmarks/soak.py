"""A long run with faults: does memory, threads or files grow, does any healthy camera stall, is any event lost?

    python benchmarks/soak.py --out OUT_DIR [--minutes 30] [--synthetic 12] [--rtsp 2] [--restart-every-s 60]

- cameras: `--synthetic` cameras of the demo world (samples/world, the demo's scenes, zones, lines and alert
  rules, the bundled detector on the CPU) and `--rtsp` cameras, each served by its own gst-rtsp-server (as
  the tests use) from a 30 fps 848x464 H.264 clip.
- faults: every `--restart-every-s` seconds each RTSP server is killed and started again `--outage-s` later
  (the servers take turns); every `--swap-every-s` seconds, from `--first-swap-s` on, one synthetic camera
  is removed and added again (its per-stream state must go with it). The first swap falls inside the
  warm-up, so that what one swap leaves allocated for good (a new decoder's buffer pool, the allocator's
  high-water mark) is part of the level the growth is measured from, and a swap that leaks shows as growth
  at each of the later ones.
- samples, every `--sample-every-s` seconds: the process's RSS, threads (native, as the kernel counts them),
  open file descriptors and each stream's frames per second through the stages.

Writes OUT_DIR/soak.csv (one row per sample), OUT_DIR/soak.json (the summary: RSS slope after warm-up,
stalls of healthy cameras, recovery after each restart, events published against those stored) and
OUT_DIR/soak.png. The run's SQLite database and media go to OUT_DIR too. Needs ../shared/media/dog-848x464.mp4.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.recovery import machine  # noqa: E402
from pipeline.config.loader import parse_config  # noqa: E402
from pipeline.config.models import StreamConfig  # noqa: E402
from pipeline.runtime.memory import tune_allocator  # noqa: E402
from pipeline.runtime.runner import PipelineRunner  # noqa: E402
from pipeline.sinks.base import BaseSink  # noqa: E402
from pipeline.types import FrameResult  # noqa: E402
from samples.world.background import N_LIGHT_LEVELS, N_NOISE_VARIANTS  # noqa: E402
from tests.support.http_server import free_port  # noqa: E402
from tests.support.rtsp_server import RtspServer, concat_clip  # noqa: E402

CLIP = REPO.parent / "shared" / "media" / "dog-848x464.mp4"
DEMO = REPO / "configs" / "demo.yaml"
SCENES = ("plaza", "street", "junction")
QUIET_S = 15.0
"""No fault starts in the run's last seconds: each one's recovery is seen, and no swap meets the shutdown."""
GAP_S = 2.0
"""A stream whose frames are further apart than this (capture wall time) has stalled for that long."""


class FrameGaps(BaseSink):
    """Per stream: frames and events seen, and every gap of more than GAP_S between two frames'
    capture times as (wall time of the frame after it, gap length) in seconds."""

    name = "soak-gaps"

    def __init__(self):
        self._lock = threading.Lock()
        self.frames: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)
        self.gaps: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._last: dict[str, float] = {}

    def on_frame(self, result: FrameResult) -> None:
        stream_id, wall_s = result.frame.stream_id, result.frame.wall_ns / 1e9
        with self._lock:
            self.frames[stream_id] += 1
            self.events[stream_id] += len(result.events)
            last = self._last.get(stream_id)
            if last is not None and wall_s - last > GAP_S:
                self.gaps[stream_id].append((wall_s, wall_s - last))
            self._last[stream_id] = wall_s

    def on_events(self, stream_id: str, events) -> None:
        with self._lock:
            self.events[stream_id] += len(events)

    def on_stream_end(self, stream_id: str) -> None:
        with self._lock:
            self._last.pop(stream_id, None)  # a camera removed on purpose has not stalled


def scene(url: str) -> str:
    """"plaza" for synthetic://plaza?seed=1."""
    return url.split("://")[1].split("?")[0]


def soak_config(out: Path, synthetic: int, rtsp_urls: list[str], fps: float) -> dict:
    """The demo's config with `synthetic` cameras (scenes in turn) plus the RTSP ones, stored in `out`."""
    demo = yaml.safe_load(DEMO.read_text())
    scene_of_demo = {s["id"]: scene(s["url"]) for s in demo["streams"]}
    streams = [{"id": f"syn-{i + 1:02d}", "lane": "default",
                "url": f"synthetic://{SCENES[i % 3]}?seed={2000 + i}&fps={fps:g}&size=640x360"
                       + ("&encode=1" if SCENES[i % 3] == "plaza" else "")} for i in range(synthetic)]
    streams += [{"id": f"rtsp-{i + 1}", "url": url, "lane": "default", "fps": fps, "read_timeout_s": 5}
                for i, url in enumerate(rtsp_urls)]
    for item in demo["zones"] + demo["lines"]:
        scenes = {scene_of_demo[s] for s in item["streams"]}
        item["streams"] = [s["id"] for s in streams if s["id"].startswith("syn") and scene(s["url"]) in scenes]
    demo["streams"] = streams
    demo["sinks"] = [{"type": "sqlite", "path": str(out / "soak.db")},
                     {"type": "media", "directory": str(out / "media"), "clip_before_s": 3, "clip_after_s": 2}]
    demo["runtime"] = {"outbox_path": str(out / "outbox.db")}
    return demo


def process_sample() -> dict:
    """RSS (MiB), native threads and open file descriptors of this process."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir("/proc/self/fd"))}


class Faults:
    """Restarts the RTSP servers in turn and removes and adds a synthetic camera again, on a schedule."""

    def __init__(self, runner: PipelineRunner, servers: list[RtspServer], args):
        self.runner, self.servers, self.args = runner, servers, args
        self.restarts: list[tuple[str, float]] = []  # (stream id, wall time its server accepted again)
        self.swaps: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak:faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        step = self.args.restart_every_s / max(len(self.servers), 1)
        start = time.monotonic()
        next_restart, next_swap, turn, swapped = start + step, start + self.args.first_swap_s, 0, 0
        while not self._stop.wait(0.5):
            now = time.monotonic()
            if now > start + self.args.minutes * 60 - QUIET_S:
                return
            if self.servers and now >= next_restart:
                server = self.servers[turn % len(self.servers)]
                server.kill()
                self._stop.wait(self.args.outage_s)  # the fault's length
                server.start()
                self.restarts.append((f"rtsp-{turn % len(self.servers) + 1}", time.time()))
                turn, next_restart = turn + 1, next_restart + step
            if self.args.synthetic and now >= next_swap:
                stream = [s for s in self.runner.streams() if s.id.startswith("syn")][swapped % self.args.synthetic]
                self.runner.remove_stream(stream.id, timeout=30)
                self.runner.add_stream(StreamConfig(**stream.model_dump()))
                self.swaps.append((stream.id, time.time()))
                swapped, next_swap = swapped + 1, next_swap + self.args.swap_every_s


def recoveries(faults: Faults, gaps: FrameGaps) -> list[float | None]:
    """Seconds from each restarted server accepting again to its camera's next frame (None: none came)."""
    out = []
    for stream_id, accepting in faults.restarts:
        after = [end for end, _ in gaps.gaps[stream_id] if end >= accepting]
        out.append(round(after[0] - accepting, 2) if after else None)
    return out


def healthy_stalls(faults: Faults, gaps: FrameGaps, warm_up_s: float, started: float) -> list[dict]:
    """Gaps of synthetic cameras after warm-up that no removal of that camera explains."""
    swapped = defaultdict(list)
    for stream_id, at in faults.swaps:
        swapped[stream_id].append(at)
    stalls = []
    for stream_id, found in gaps.gaps.items():
        for end, length in found:
            explained = any(end - length - 5 <= at <= end + 5 for at in swapped[stream_id])
            if stream_id.startswith("syn") and end - length > started + warm_up_s and not explained:
                stalls.append({"stream": stream_id, "at_s": round(end - length - started, 1), "gap_s": round(length, 2)})
    return stalls


def world_bank_bytes(size: tuple[int, int]) -> int:
    """The one cache of a synthetic camera that fills for minutes (as its lighting changes): its backgrounds."""
    return N_LIGHT_LEVELS * N_NOISE_VARIANTS * size[0] * size[1] * 3


def rss_slope(rows: list[dict], warm_up_s: float) -> float:
    """Least-squares RSS growth after warm-up in MiB per minute."""
    late = [r for r in rows if r["t_s"] >= warm_up_s]
    if len(late) < 3:
        return float("nan")
    t = np.array([r["t_s"] / 60 for r in late])
    return float(np.polyfit(t, np.array([r["rss_mib"] for r in late]), 1)[0])


def plot(rows: list[dict], streams: list[str], faults: Faults, started: float, path: Path) -> None:
    """The samples as a PNG; without matplotlib (the `bench` extra) the CSV and summary are all there is."""
    try:
        import matplotlib  # noqa: PLC0415 - the bench extra
    except ImportError:
        print(f"matplotlib is not installed (pip install -e '.[bench]'): no {path}", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(8, 8), sharex=True)
    for ax, key, label in zip(axes, ("rss_mib", "threads", "fds"), ("RSS (MiB)", "threads", "open files")):
        ax.plot(t, [r[key] for r in rows], lw=1)
        ax.set_ylabel(label)
    for stream_id in streams:
        axes[3].plot(t, [r.get(f"fps:{stream_id}", np.nan) for r in rows], lw=0.7,
                     color="tab:red" if stream_id.startswith("rtsp") else "tab:gray")
    for _, at in faults.restarts:
        axes[3].axvline((at - started) / 60, color="tab:red", lw=0.4, alpha=0.4)
    axes[3].set_ylabel("fps per stream\n(red: RTSP)")
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--synthetic", type=int, default=12)
    parser.add_argument("--rtsp", type=int, default=2)
    parser.add_argument("--fps", type=float, default=5, help="frames per second of every camera")
    parser.add_argument("--restart-every-s", type=float, default=60, help="each RTSP server is restarted this often")
    parser.add_argument("--outage-s", type=float, default=2)
    parser.add_argument("--swap-every-s", type=float, default=300, help="a synthetic camera is removed and added this often")
    parser.add_argument("--first-swap-s", type=float, default=None,
                        help="the first swap (default: half --swap-every-s); inside the warm-up, so that the "
                             "warm-up has seen every fault once")
    parser.add_argument("--sample-every-s", type=float, default=5)
    parser.add_argument("--warm-up-s", type=float, default=300, help="RSS growth is measured after this")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                        help="tuned: glibc set up as `run` sets it (pipeline.runtime.memory); default: as glibc starts")
    args = parser.parse_args()
    args.first_swap_s = args.swap_every_s / 2 if args.first_swap_s is None else args.first_swap_s
    if args.allocator == "tuned":
        tune_allocator()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = concat_clip(CLIP, Path(tmp) / "clip.mp4", copies=40) if args.rtsp else None
        servers = [RtspServer(clip, free_port()).start() for _ in range(args.rtsp)]
        try:
            summary = soak(args, servers)
        finally:
            for server in servers:
                server.kill()
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "recoveries_s"}, indent=2))


def soak(args, servers: list[RtspServer]) -> dict:
    config = parse_config(yaml.safe_dump(soak_config(args.out, args.synthetic, [s.url for s in servers], args.fps)))
    gaps = FrameGaps()
    runner = PipelineRunner(config, sinks=[gaps])
    faults = Faults(runner, servers, args)
    rows: list[dict] = []
    started = time.time()
    previous: dict[str, int] = {}

    def sample(snap) -> None:
        row = {"t_s": round(time.time() - started, 1), **process_sample()}
        for stream_id, stats in snap.streams.items():
            staged, before = stats["staged"], previous.get(stream_id, stats["staged"])
            row[f"fps:{stream_id}"] = round((staged - before if staged >= before else staged) / args.sample_every_s, 2)
            previous[stream_id] = staged
        rows.append(row)

    faults.start()
    try:
        final = runner.run(args.minutes * 60, on_progress=sample, progress_interval_s=args.sample_every_s)
    finally:
        faults.stop()
    streams = sorted({k[4:] for r in rows for k in r if k.startswith("fps:")})
    with (args.out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["t_s", "rss_mib", "threads", "fds"] + [f"fps:{s}" for s in streams])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, streams, faults, started, args.out / "soak.png")
    with sqlite3.connect(args.out / "soak.db") as db:
        stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    late = [r for r in rows if r["t_s"] >= args.warm_up_s]
    recovered = recoveries(faults, gaps)
    return {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "minutes": args.minutes, "allocator": args.allocator,
        "cameras": {"synthetic": args.synthetic, "rtsp": len(servers), "fps": args.fps},
        "rss_mib": {"start": rows[0]["rss_mib"], "after_warm_up": late[0]["rss_mib"] if late else None,
                    "end": rows[-1]["rss_mib"], "max": max(r["rss_mib"] for r in rows)},
        "world_bank_mib": round(args.synthetic * world_bank_bytes((640, 360)) / 2**20, 1),
        "rss_slope_mib_per_min": round(rss_slope(rows, args.warm_up_s), 4),
        "threads": {"after_warm_up": [min(r["threads"] for r in late), max(r["threads"] for r in late)] if late else None},
        "fds": {"after_warm_up": [min(r["fds"] for r in late), max(r["fds"] for r in late)] if late else None},
        "restarts": len(faults.restarts), "recoveries_s": recovered,
        "recovery_s": {"median": float(np.median([r for r in recovered if r is not None])) if any(recovered) else None,
                       "max": max((r for r in recovered if r is not None), default=None),
                       "never": sum(r is None for r in recovered)},
        "swaps": len(faults.swaps), "healthy_stalls": healthy_stalls(faults, gaps, args.warm_up_s, started),
        "events": {"published": final.events, "seen_by_sinks": sum(gaps.events.values()), "stored": stored},
        "frames": {"staged": sum(s["staged"] for s in final.streams.values()),
                   "dropped": {sid: {k: v for k, v in s.items() if k.startswith("dropped") and v}
                               for sid, s in final.streams.items()}},
    }


if __name__ == "__main__":
    main()
