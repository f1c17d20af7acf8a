"""What the console's previews cost: end-to-end frames/s of the demo with nobody watching, with one viewer
of the camera grid (every camera, 320 pixels wide) and with one viewer of a camera's large view.

    python benchmarks/console_preview.py [--window-s 20] [--rounds 2] [--size 640x360] [--preview-fps 4]

The demo's eight cameras (configs/demo.yaml: its detector, tracker, zones, lines and alerts, SQLite in a
temporary folder) render as fast as they can (`realtime=0`), so the pipeline runs at its ceiling and any
work the previews add shows as fewer frames/s. A viewer is an HTTP client reading `/api/previews` as the
page does (the browser's own drawing is not the pipeline's cost). Each round measures the three cases in
turn for `window_s` each, after `warm_s`; frames/s are frames through the stages per second over the window.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.config.models import HttpConfig  # noqa: E402
from pipeline.runtime.runner import PipelineRunner  # noqa: E402
from pipeline.service import Control, Service  # noqa: E402


def site(tmp: Path, size: str) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for stream in data["streams"]:
        stream["url"] = stream["url"].replace("size=640x360", f"size={size}") + "&realtime=0"
    data["detector"]["model"] = str(REPO / data["detector"]["model"])
    data["sinks"] = [{"type": "sqlite", "path": str(tmp / "site.db")}]
    data["runtime"] = {"outbox_path": str(tmp / "outbox.db")}
    if size != "640x360":  # the demo's geometry is for 640x360: scale it
        sx, sy = (int(v) / d for v, d in zip(size.split("x"), (640, 360)))
        for zone in data["zones"]:
            zone["polygon"] = [[x * sx, y * sy] for x, y in zone["polygon"]]
        for line in data["lines"]:
            line["start"], line["end"] = ([p[0] * sx, p[1] * sy] for p in (line["start"], line["end"]))
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Viewer:
    """Reads /api/previews on a thread until `stop()`; counts the previews it got."""

    def __init__(self, base_url: str, streams: list[str], width: int):
        self.got = 0
        self._stop = threading.Event()
        self._url = f"{base_url}/api/previews?streams={','.join(streams)}&width={width}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=None) as client, client.stream("GET", self._url) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    self.got += 1
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def staged(runner: PipelineRunner) -> int:
    return sum(runner.parts.stages.frames().values())


def measure(runner: PipelineRunner, window_s: float) -> float:
    start, t0 = staged(runner), time.monotonic()
    time.sleep(window_s)  # a measurement window, not a synchronisation
    return (staged(runner) - start) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--warm-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", default="640x360", help="the cameras' picture size")
    parser.add_argument("--preview-fps", type=float, default=4.0)
    args = parser.parse_args()

    import samples.world.source  # noqa: F401, PLC0415 - the synthetic:// cameras

    with tempfile.TemporaryDirectory() as tmp:
        runner = PipelineRunner(load_config(site(Path(tmp), args.size)))
        http = HttpConfig(port=0, console={"preview_fps": args.preview_fps})
        service = Service(runner, http, Control(runner))
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        runner.running.wait(60)
        base = f"http://127.0.0.1:{service.port}"
        ids = [config.id for config in runner.streams()]
        time.sleep(args.warm_s)  # let the engine and the world settle before measuring
        cases = {"no viewer": None, "grid (8 cameras, 320 px)": (ids, 320),
                 f"large view (1 camera, {args.size.split('x')[0]} px)": (ids[:1], 1280)}
        rows: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for case, watch in cases.items():
                encoded = service.console.previews.encoded
                viewer = Viewer(base, *watch) if watch else None
                fps = measure(runner, args.window_s)
                if viewer:
                    viewer.stop()
                rows[case].append((fps, (service.console.previews.encoded - encoded) / args.window_s))
        service.request_stop()
        thread.join(60)
    print(f"| case | end-to-end frames/s (median of {args.rounds}) | each round | previews encoded/s |")
    print("| --- | --- | --- | --- |")
    for case, values in rows.items():
        fps = [v[0] for v in values]
        print(f"| {case} | {statistics.median(fps):.1f} | {', '.join(f'{v:.1f}' for v in fps)} | "
              f"{statistics.median(v[1] for v in values):.1f} |")


if __name__ == "__main__":
    main()
