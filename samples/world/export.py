"""Write a rendered clip with its ground truth:

    python -m samples.world.export --scene plaza --seed 3 --frames 300 --out DIR

DIR/clip.mp4     H.264 (libx264, yuv420p), time base 1/fps, frame i at pts i
DIR/gt/gt.txt    MOTChallenge: frame (1-based), id, x, y, w, h, conf=1, class, visibility
                 where class = class id + 1 (1 person, 2 bicycle, 3 car, 4 bus, 5 truck) and the box is
                 the visible extent clipped to the frame
DIR/seqinfo.ini  MOTChallenge sequence description
DIR/events.json  line crossings, zone entries/exits with dwell, line counts, and the geometry used
"""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import av

from samples.world.events import clip_events
from samples.world.layout import CLASS_NAMES
from samples.world.render import GroundTruth, World
from samples.world.url import parse_size


def mot_line(frame: int, gt: GroundTruth) -> str:
    """One gt.txt row for 0-based `frame`."""
    x0, y0, x1, y1 = gt.box
    return f"{frame + 1},{gt.track_id},{x0:g},{y0:g},{x1 - x0:g},{y1 - y0:g},1,{gt.class_id + 1},{gt.visibility:g}"


def export_clip(world: World, n_frames: int, out: Path, crf: int = 23) -> dict:
    """Render frames 0..n_frames-1 of `world` into `out` (see module docstring); returns the events dict."""
    (out / "gt").mkdir(parents=True, exist_ok=True)
    rate = Fraction(world.fps).limit_denominator(1001)
    rows = []
    with av.open(str(out / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = world.width, world.height, "yuv420p"
        stream.time_base = 1 / rate
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(max(int(world.fps * 2), 1))}
        for i in range(n_frames):
            image, truth = world.render(i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
            rows.extend(mot_line(i, gt) for gt in truth)
        container.mux(stream.encode(None))
    (out / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    (out / "seqinfo.ini").write_text(
        f"[Sequence]\nname=synthetic-{world.scene}-{world.seed}\nimDir=img1\nframeRate={world.fps:g}\n"
        f"seqLength={n_frames}\nimWidth={world.width}\nimHeight={world.height}\nimExt=.jpg\n"
    )
    events = clip_events(world, n_frames)
    events.update(scene=world.scene, seed=world.seed, fps=world.fps, size=list(world.size),
                  frames=n_frames, class_names=CLASS_NAMES)
    (out / "events.json").write_text(json.dumps(events, indent=1))
    return events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m samples.world.export", description="Render a synthetic clip with ground truth.")
    p.add_argument("--scene", default="plaza", help="plaza | street | junction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--size", default="640x360", help="WxH pixels, even numbers")
    p.add_argument("--crf", type=int, default=23, help="x264 quality: lower is better and larger")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size, "--size")
        world = World(args.scene, args.seed, size, args.fps)
    except ValueError as exc:
        p.error(str(exc))
    events = export_clip(world, args.frames, args.out, args.crf)
    print(f"wrote {args.out}/clip.mp4, gt/gt.txt and events.json ({len(events['events'])} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
