"""What decides the decode ceiling: frames/s of the decode stage for the same footage re-encoded at other
resolutions, GOP lengths, B-frame counts and bitrates, one setting changed at a time from the base camera,
so a user can place their own cameras (`run_pipeline.py bench --decode-table`)."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.bench.ceilings import decode_ceiling
from pipeline.bench.clips import camera_clip
from pipeline.bench.ramp import bulk_lane
from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import resolve

log = logging.getLogger(__name__)

VARIANTS: list[tuple[str, dict]] = [
    ("base", {}),
    ("1280x720", {"size": (1280, 720)}),
    ("3840x2160", {"size": (3840, 2160)}),
    ("GOP 10", {"gop": 10}),
    ("GOP 120", {"gop": 120}),
    ("2 B-frames", {"bframes": 2}),
    ("2 Mbit/s", {"bitrate_kbps": 2000}),
    ("8 Mbit/s", {"bitrate_kbps": 8000}),
]


def decode_table(base: PipelineConfig, source: Path, folder: Path, size: tuple[int, int], fps: float,
                 streams: int, seconds: float, clip_seconds: float = 10.0) -> list[dict]:
    """One row per variant of the base camera (`size` at `fps`, GOP one second, no B-frames, crf 23):
    decode frames/s with `streams` looped copies, and the cameras at `fps` that rate would feed."""
    rows = []
    for name, change in VARIANTS:
        width, height = change.get("size", size)
        clip = camera_clip(source, folder, width, height, fps, clip_seconds, gop=change.get("gop"),
                           bframes=change.get("bframes", 0), bitrate_kbps=change.get("bitrate_kbps"))
        lane = bulk_lane([lane.name for lane in base.lanes])
        copies = [StreamConfig(id=f"d{i}", url=str(clip), loop=True, lane=lane) for i in range(streams)]
        plan = resolve(base.model_copy(update={"streams": copies}))  # decode processes (auto) sized for them all
        result = decode_ceiling(base, plan, str(clip), streams, seconds)
        mbits = clip.stat().st_size * 8 / clip_seconds / 1e6
        rows.append({"variant": name, "size": f"{width}x{height}", "gop": change.get("gop", round(fps)),
                     "bframes": change.get("bframes", 0), "mbit_s": round(mbits, 2), "fps": result["fps"],
                     "cameras_at_fps": int(result["fps"] // fps)})
        log.info("decode %s: %.0f frames/s (%d cameras at %g fps)", name, result["fps"], rows[-1]["cameras_at_fps"], fps)
    return rows


def markdown(rows: list[dict], streams: int, fps: float) -> list[str]:
    lines = [f"Decode stage alone, {streams} looped streams, same footage re-encoded (H.264, libx264 veryfast):", "",
             "| variant | size | GOP | B-frames | Mbit/s | frames/s | cameras at " + f"{fps:g} fps |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {r['size']} | {r['gop']} | {r['bframes']} | {r['mbit_s']:.1f} | {r['fps']:,.0f} | "
              f"{r['cameras_at_fps']} |" for r in rows]
    return lines
