"""The demo world as a tracking benchmark: exact ground truth, a real detector's errors.

    .venv/bin/python benchmarks/demo_mot.py OUT --seeds 2001 2002 [--seconds 60]

For each seed, the world `SCENES[seed % 3]` (plaza, street, junction) at 640x360 and 10 frames/s, as
the demo's cameras, is rendered and run through the bundled detector (`samples/models/world_detector.onnx`,
ONNX Runtime on the CPU, the pipeline's Detector with `conf_threshold` 0.1 so that the tracker's
low-score stage has what a real detector gives it). Written per sequence `OUT/<name>/`:

- `gt/gt.txt` + `seqinfo.ini` in MOT17's layout, so TrackEval's MotChallenge2DBox scores it: every
  object of every class is a "pedestrian" (class 1) when it counts for the demo's own scoring
  (visibility >= 0.35 and at least 8 px tall, `samples.world.scoring`), else a distractor (class 8),
  whose matched boxes TrackEval neither rewards nor penalises;
- `det/det.npy`: (N, 7) float32 frame, x, y, w, h, score, class id (MOT det.txt has no class column).

Sequences already written are kept (rendering and detecting 600 frames takes about a minute here).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENES = ("plaza", "street", "junction")
FPS = 10
SIZE = (640, 360)
CONF = 0.1


def sequence_name(seed: int) -> str:
    return f"{SCENES[seed % len(SCENES)]}-{seed}"


def write_sequence(out_root: Path, seed: int, seconds: float, detector) -> Path:
    """Render, detect and write one seed's sequence; returns its folder."""
    from samples.world import World  # noqa: PLC0415 - needs the repository on sys.path
    from samples.world.scoring import MIN_HEIGHT_PX, MIN_VISIBILITY  # noqa: PLC0415

    folder = out_root / sequence_name(seed)
    if (folder / "det" / "det.npy").exists():
        return folder
    world = World(SCENES[seed % len(SCENES)], seed, SIZE, FPS)
    n = int(seconds * FPS)
    gt_rows, det_rows = [], []
    for start in range(0, n, 8):
        batch = list(range(start, min(start + 8, n)))
        rendered = [world.render(f) for f in batch]
        found = detector.detect_images([image for image, _ in rendered])[0].to_host()
        for i, (f, (_, truth)) in enumerate(zip(batch, rendered)):
            for g in truth:
                x0, y0, x1, y1 = g.box
                counts = g.visibility >= MIN_VISIBILITY and y1 - y0 >= MIN_HEIGHT_PX
                gt_rows.append((f + 1, g.track_id + 1, x0, y0, x1 - x0, y1 - y0, 1, 1 if counts else 8, g.visibility))
            d = found.for_frame(i)
            xyxy = d.xyxy.astype(np.float64)
            det_rows.append(np.column_stack([np.full(len(d), f + 1), xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2],
                                             d.score, d.class_id]))
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    (folder / "det").mkdir(parents=True, exist_ok=True)
    lines = [f"{r[0]},{r[1]},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]},{r[7]},{r[8]:.3f}" for r in gt_rows]
    (folder / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={folder.name}\nimDir=img1\nframeRate={FPS}\nseqLength={n}\n"
        f"imWidth={SIZE[0]}\nimHeight={SIZE[1]}\nimExt=.jpg\n")
    np.save(folder / "det" / "det.npy", np.concatenate(det_rows).astype(np.float32))
    return folder


def make_detector():
    from pipeline.config.models import DetectorConfig  # noqa: PLC0415
    from pipeline.detect.detector import Detector  # noqa: PLC0415

    model = REPO / "samples" / "models" / "world_detector.onnx"
    return Detector(DetectorConfig(model=model, engine="onnxruntime", conf_threshold=CONF), max_batch=8)


def write_all(out_root: Path, seeds: list[int], seconds: float) -> list[Path]:
    """Every seed's sequence (made once, then reused)."""
    todo = [s for s in seeds if not (out_root / sequence_name(s) / "det" / "det.npy").exists()]
    if not todo:
        return [out_root / sequence_name(s) for s in seeds]
    detector = make_detector()
    try:
        return [write_sequence(out_root, s, seconds, detector) for s in seeds]
    finally:
        detector.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    for folder in write_all(args.out_root, args.seeds, args.seconds):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
